// Package browser holds the dashboard's browser test (build tag browser,
// run by `make test-browser`): headless Chromium (Debian's chromium),
// driven with chromedp, against the built mayu on loopback during a small
// boot storm.
package browser
