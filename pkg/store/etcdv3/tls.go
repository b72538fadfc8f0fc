package etcdv3

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles are the PEM files of the client's TLS to etcd: a client
// certificate and its key (both or neither; etcd's --client-cert-auth
// needs them), and the CA bundle etcd's certificate is checked against
// (the system's when empty).
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// Config reads the files into a TLS client configuration (TLS 1.2 at
// least). A missing or unreadable file, a key that does not match its
// certificate or a CA file without a certificate is an error naming it.
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("etcdv3: a client certificate needs its key and a key its certificate")
	}
	if f.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdv3: client certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcdv3: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdv3: CA file %s holds no PEM certificate", f.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
