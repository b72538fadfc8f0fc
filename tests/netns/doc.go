// Package netns holds the daemon-level network tests (root, build tag
// nettest, run by `make test-net`): the built mayu with real dnsmasq in a
// network namespace of the test's own, driven over HTTP from inside that
// namespace, with real DHCP and TFTP clients in a second one. The sandbox
// acceptance test (tests/e2e) is the machine-level counterpart.
package netns
