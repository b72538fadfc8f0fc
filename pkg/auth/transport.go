package auth

import "net/http"

// WithToken returns a RoundTripper that sends "Authorization: Bearer
// <token>" with every request it passes to rt (http.DefaultTransport if
// nil); an empty token sends none. It is for code that takes an
// *http.Client (load tools, tests); mayu's client sets the header itself.
func WithToken(rt http.RoundTripper, token string) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return tokenTransport{rt: rt, token: token}
}

type tokenTransport struct {
	rt    http.RoundTripper
	token string
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.token == "" {
		return t.rt.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not change the caller's request
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.rt.RoundTrip(r)
}
