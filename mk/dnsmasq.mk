# Network tests of pkg/dnsmasq (root): real dnsmasq supervised by mayu on a
# bridge in network namespaces the tests create, real DHCP (busybox udhcpc)
# and TFTP (tftp-hpa, busybox tftp) clients. They live behind the nettest
# build tag so test-unit does not run them a second time.
TEST_TARGETS += test-net

.PHONY: test-net
test-net: build ## network tests (root): dnsmasq, DHCP, TFTP in network namespaces
	cd pkg && $(GO) test -tags nettest -race -count=1 -timeout 20m -v -run '^TestNet' ./dnsmasq/
