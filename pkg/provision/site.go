package provision

import (
	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/render"
)

// Site is what every machine is told about mayu and its cluster: the URL
// it reaches mayu at and the settings every final config shares. It needs
// no store, so `mayu --show-templates` renders from it too.
type Site struct {
	Cluster  *config.Config
	HTTPPort int  // --http-port
	NoTLS    bool // --no-tls
	// CACert is what machines trust mayu's certificate by (PEM): the
	// --tls-ca-file bundle, else the certificate itself. Empty with
	// --no-tls.
	CACert string
}

// BaseURL is http(s)://<bind_addr>:<port>, the start of every URL handed to
// a machine.
func (s Site) BaseURL() string { return s.Cluster.Network.BaseURL(s.HTTPPort, s.NoTLS) }

// FinalData is the data the final config of h is rendered with;
// discoveryURL is its etcd discovery URL, empty without discovery.
func (s Site) FinalData(h host.Host, discoveryURL string) render.FinalData {
	base := s.BaseURL()
	return render.FinalData{
		Host:             h,
		EtcdDiscoveryUrl: discoveryURL,
		ClusterNetwork:   s.Cluster.Network,
		MayuHost:         s.Cluster.Network.BindAddr,
		MayuPort:         s.HTTPPort,
		MayuURL:          base,
		NoTLS:            s.NoTLS,
		CACert:           s.CACert,
		PostBootURL:      base + "/admin/host/" + h.Serial + "/boot_complete",
		TemplatesEnv:     s.Cluster.TemplatesEnv,
	}
}

// CACert is the certificate machines trust mayu by, see Site.CACert.
func (p *Provisioner) CACert() string { return p.site.CACert }

// BaseURL is the URL machines reach mayu at, see Site.BaseURL.
func (p *Provisioner) BaseURL() string { return p.site.BaseURL() }

// FinalData is the data the final config of h is rendered with. Its etcd
// discovery URL names h's token, else the cluster's default token; it is
// empty without Discovery or without any token.
func (p *Provisioner) FinalData(h host.Host) render.FinalData {
	var discoveryURL string
	if token := etcdToken(h.EtcdClusterToken, p.defaultToken()); p.disc != nil && token != "" {
		discoveryURL = p.disc.URL(token)
	}
	return p.site.FinalData(h, discoveryURL)
}
