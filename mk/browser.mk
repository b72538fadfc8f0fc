# The dashboard in a real browser: headless Chromium (Debian's chromium),
# driven from Go with chromedp, against the built mayu on loopback during a
# small boot storm (tests/browser, build tag browser, so test-unit does not
# run it). UPDATE_SCREENSHOT=1 writes docs/dashboard.png.
TEST_TARGETS += test-browser

.PHONY: test-browser
test-browser: build ## dashboard test in headless Chromium during a small storm (chromedp)
	cd tests && $(GO) test -tags browser -count=1 -timeout 10m -v -run '^TestBrowser' ./browser/ \
	  $(if $(UPDATE_SCREENSHOT),-args -update-screenshot)
