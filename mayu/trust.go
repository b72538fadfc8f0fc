package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// machineTrust is what machines are handed to check mayu's HTTPS by: the
// CA bundle (PEM certificates only: a certificate file that carries its key
// too never gives the key away) and the pin of mayu's key in curl's
// --pinnedpubkey form, "sha256//<base64 of the SHA-256 of the
// SubjectPublicKeyInfo>". Without --tls-ca-file the bundle is the
// certificate file's own certificates, which for a self-signed one is the
// certificate itself.
func machineTrust(certFile, caFile string) (caPEM, pin string, err error) {
	certs, err := pemCertificates(certFile)
	if err != nil {
		return "", "", fmt.Errorf("--tls-cert-file: %w", err)
	}
	leaf, err := x509.ParseCertificate(certs[0].Bytes)
	if err != nil {
		return "", "", fmt.Errorf("--tls-cert-file %s: %w", certFile, err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	pin = "sha256//" + base64.StdEncoding.EncodeToString(sum[:])
	src := certFile
	if caFile != "" {
		src = caFile
		if certs, err = pemCertificates(caFile); err != nil {
			return "", "", fmt.Errorf("--tls-ca-file: %w", err)
		}
	}
	var b bytes.Buffer
	for _, c := range certs {
		if _, err := x509.ParseCertificate(c.Bytes); err != nil {
			return "", "", fmt.Errorf("a certificate of %s does not parse: %w", src, err)
		}
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Bytes}); err != nil {
			return "", "", err
		}
	}
	return b.String(), pin, nil
}

// pemCertificates returns the CERTIFICATE blocks of a PEM file.
func pemCertificates(path string) ([]*pem.Block, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*pem.Block
	for {
		var blk *pem.Block
		blk, raw = pem.Decode(raw)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, blk)
		}
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no PEM certificate in it")
	}
	return out, nil
}
