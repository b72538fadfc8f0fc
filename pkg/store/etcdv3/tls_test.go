//go:build linux

package etcdv3_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate signed by it into dir; it returns the paths by name
// ("ca", "server", "server-key", "client", "client-key").
func pki(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	write := func(name, typ string, der []byte) {
		p := filepath.Join(dir, name+".pem")
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		paths[name] = p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	write("ca", "CERTIFICATE", der)
	for i, leaf := range []struct {
		name string
		use  x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "mayu " + leaf.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{leaf.use}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		write(leaf.name, "CERTIFICATE", der)
		kb, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		write(leaf.name+"-key", "EC PRIVATE KEY", kb)
	}
	return paths
}

// An etcd that requires client certificates: the store connects with the
// CA and its client certificate, and is refused (ErrUnavailable, the
// endpoint named) without the certificate or with another CA.
func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	p := pki(t, dir)
	ep := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	proctest.StartEtcd(t, "tls", "--initial-cluster", "tls={peer}",
		"--listen-client-urls", "https://"+ep, "--advertise-client-urls", "https://"+ep,
		"--cert-file", p["server"], "--key-file", p["server-key"], "--trusted-ca-file", p["ca"], "--client-cert-auth")

	opts := etcdv3.Options{Endpoints: []string{"https://" + ep}, Timeout: 3 * time.Second,
		TLS: &etcdv3.TLSFiles{CAFile: p["ca"], CertFile: p["client"], KeyFile: p["client-key"]}}
	var s *etcdv3.Store
	var err error
	require.Eventually(t, func() bool { s, err = etcdv3.Open(opts); return err == nil }, 30*time.Second, 200*time.Millisecond)
	defer s.Close()
	_, err = s.Create("tls1", store.Step{Message: "host created", Apply: func(h *host.Host) error { h.State = host.Configured; return nil }})
	require.NoError(t, err)

	noCert := opts
	noCert.TLS = &etcdv3.TLSFiles{CAFile: p["ca"]}
	_, err = etcdv3.Open(noCert)
	require.ErrorIs(t, err, store.ErrUnavailable)
	assert.Contains(t, err.Error(), ep)

	other := pki(t, t.TempDir())
	wrongCA := opts
	wrongCA.TLS = &etcdv3.TLSFiles{CAFile: other["ca"], CertFile: p["client"], KeyFile: p["client-key"]}
	_, err = etcdv3.Open(wrongCA)
	require.ErrorIs(t, err, store.ErrUnavailable)
}
