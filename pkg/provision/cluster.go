package provision

import (
	"context"
	"fmt"
	"time"

	"mayu/pkg/discovery"
	"mayu/pkg/store"
)

// clusterTokenTimeout bounds the discovery calls of EnsureClusterToken.
const clusterTokenTimeout = 30 * time.Second

// EnsureClusterToken makes sure cluster.json names the cluster's default
// etcd discovery token, the one every host without a token of its own
// (profile or operator's) gets: a deprecated EtcdDiscoveryURL is converted,
// a missing token is created by Discovery for a cluster of size members,
// and a token the discovery service must hold a registry for (an Ensurer)
// gets one. It first checks that Discovery works at all, so a bad setting
// stops the daemon with one clear message. Calls to Discovery are bounded
// by 30 seconds.
func (p *Provisioner) EnsureClusterToken(ctx context.Context, size int) error {
	if p.disc == nil {
		return fmt.Errorf("provision: no etcd discovery service to create the default token with")
	}
	cctx, cancel := context.WithTimeout(ctx, clusterTokenTimeout)
	defer cancel()
	if err := p.disc.Check(cctx); err != nil {
		return fmt.Errorf("etcd discovery: %w", err)
	}
	cl := p.store.Cluster().Config
	token := cl.DefaultEtcdClusterToken
	if token == "" && cl.EtcdDiscoveryURL != "" {
		t, err := discovery.TokenFromURL(cl.EtcdDiscoveryURL)
		if err != nil {
			return fmt.Errorf("cluster.json: EtcdDiscoveryURL: %w", err)
		}
		token = t
		p.log.Info("converted deprecated EtcdDiscoveryURL of cluster.json", "url", cl.EtcdDiscoveryURL, "token", token)
	}
	if token == "" {
		t, err := p.disc.NewToken(cctx, size)
		if err != nil {
			return fmt.Errorf("creating the default etcd discovery token: %w", err)
		}
		token = t
	} else if e, ok := p.disc.(discovery.Ensurer); ok {
		if _, err := e.Ensure(cctx, token, size); err != nil {
			return fmt.Errorf("etcd discovery registry for %s: %w", token, err)
		}
	}
	if token != cl.DefaultEtcdClusterToken || cl.EtcdDiscoveryURL != "" {
		// Another instance sharing the store (--store=etcd) may have set a
		// token since cl was read: the first one written wins, so that
		// every instance hands out the same default. UpdateCluster runs
		// apply again on what another instance wrote.
		kept := ""
		_, err := p.store.UpdateCluster(fmt.Sprintf(ClusterTokenMessage, token), func(c *store.Cluster) error {
			if other := c.Config.DefaultEtcdClusterToken; other != "" && other != cl.DefaultEtcdClusterToken {
				kept = other
				return nil
			}
			kept = ""
			c.Config.DefaultEtcdClusterToken = token
			c.Config.EtcdDiscoveryURL = ""
			return nil
		})
		if err != nil {
			return err
		}
		if kept != "" {
			p.log.Info("default etcd discovery token set meanwhile by another instance; keeping it", "token", kept, "unused", token)
			return nil
		}
		p.log.Info("default etcd discovery token set", "token", token)
	}
	return nil
}

// SetClusterToken records the cluster's default etcd token in cluster.json.
func (p *Provisioner) SetClusterToken(token string) error {
	_, err := p.store.UpdateCluster(fmt.Sprintf(ClusterTokenMessage, token), func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = token
		c.Config.EtcdDiscoveryURL = ""
		return nil
	})
	return err
}

// defaultToken is the cluster's default etcd token from cluster.json.
func (p *Provisioner) defaultToken() string {
	return p.store.Cluster().Config.DefaultEtcdClusterToken
}

// etcdToken is the etcd token a host uses: its own (from its profile or an
// operator), else the cluster's default.
func etcdToken(own, clusterDefault string) string {
	if own != "" {
		return own
	}
	return clusterDefault
}
