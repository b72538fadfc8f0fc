# Network tests (root), behind the nettest build tag so test-unit does not
# run them a second time: pkg/dnsmasq's supervisor with real dnsmasq, and
# the built mayu with real dnsmasq (tests/netns), each on a bridge in
# network namespaces the tests create, with real DHCP (busybox udhcpc) and
# TFTP (tftp-hpa, busybox tftp) clients.
TEST_TARGETS += test-net

.PHONY: test-net
test-net: build ## network tests (root): dnsmasq, DHCP, TFTP in network namespaces
	cd pkg && $(GO) test -tags nettest -race -count=1 -timeout 20m -v -run '^TestNet' ./dnsmasq/
	cd tests && $(GO) test -tags nettest -race -count=1 -timeout 20m -v -run '^TestNet' ./netns/
