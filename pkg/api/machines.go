package api

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"

	"mayu/pkg/host"
	"mayu/pkg/machineauth"
	"mayu/pkg/provision"
)

// sourceIP is the address a request came from: the peer's, or what the
// server's IPExtractor makes of it when one is set (behind trusted
// proxies). X-Forwarded-For is never read on its own: anyone can send it.
func sourceIP(c echo.Context) net.IP { return requestIP(c.Echo(), c.Request()) }

func requestIP(e *echo.Echo, r *http.Request) net.IP {
	if e.IPExtractor != nil {
		return net.ParseIP(e.IPExtractor(r))
	}
	return net.ParseIP(echo.ExtractIPDirect()(r))
}

// machineRequest describes c as a request about serial (normalized).
func machineRequest(c echo.Context, serial string, kind machineauth.Kind) machineauth.Request {
	return machineauth.Request{Serial: serial, Source: sourceIP(c), Kind: kind,
		Credential: c.Request().Header.Get(machineauth.Header)}
}

// machineRoute is the middleware of a route about the machine named by its
// :serial parameter: the request must come from that machine. A malformed
// serial is left to the handler, which answers it 400.
func (s *Server) machineRoute(kind machineauth.Kind) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if s.cfg.Machines == nil {
				return next(c)
			}
			serial, err := provision.Serial(c.Param("serial"))
			if err != nil {
				return next(c)
			}
			if err := s.cfg.Machines.Authorize(machineRequest(c, serial, kind)); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// newLimiter is the limit of anonymous work per source address: limit
// requests a minute, in bursts of up to limit; nil when limit is 0.
func newLimiter(limit int) *middleware.RateLimiterMemoryStore {
	if limit <= 0 {
		return nil
	}
	return middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
		Rate: rate.Every(time.Minute / time.Duration(limit)), Burst: limit, ExpiresIn: 10 * time.Minute})
}

// limitAnonymous counts one request that makes mayu create something for
// whoever asks (what names the thing) against the source's limit in
// store, and answers 429 past it.
func (s *Server) limitAnonymous(store *middleware.RateLimiterMemoryStore, r *http.Request, what string) error {
	if store == nil {
		return nil
	}
	src := requestIP(s.e, r)
	if ok, _ := store.Allow(src.String()); ok {
		return nil
	}
	s.log.Warn("anonymous request over the limit", "source", src.String(), "what", what, "limit_per_minute", s.cfg.AnonymousLimit)
	return echo.NewHTTPError(http.StatusTooManyRequests,
		fmt.Sprintf("too many %s from %s: at most %d a minute per address (--anonymous-limit)", what, src, s.cfg.AnonymousLimit))
}

// limitRegistration applies limitAnonymous to a request that would
// register serial, a serial mayu has no record of.
func (s *Server) limitRegistration(c echo.Context, serial string) error {
	if _, known := s.prov.Host(serial); known {
		return nil
	}
	return s.limitAnonymous(s.limiter, c.Request(), "registrations of new serials")
}

// LimitNewTokens is the discovery.WriteGuard.New of this server: PUT
// /etcd/new counted against --anonymous-limit.
func (s *Server) LimitNewTokens(r *http.Request) error {
	return s.limitAnonymous(s.newTokens, r, "new etcd discovery tokens")
}

// AuthorizeMemberWrite is the discovery.WriteGuard.Member of this server:
// etcd members register from a provisioned machine's address (a host's
// InternalAddr) or from Config.EtcdMemberSources.
func (s *Server) AuthorizeMemberWrite(r *http.Request) error {
	src := requestIP(s.e, r)
	if src == nil {
		return fmt.Errorf("%w: no source address", machineauth.ErrForbidden)
	}
	if _, ok := s.prov.HostByIP(src); ok {
		return nil
	}
	for _, n := range s.cfg.EtcdMemberSources {
		if n.Contains(src) {
			return nil
		}
	}
	return fmt.Errorf("%w: etcd members register from the address of a provisioned machine, and %s is none (--etcd-member-sources adds others)",
		machineauth.ErrForbidden, src)
}

// machineMACs normalizes the MACs of a facts report for the lease check;
// malformed ones are left out here and refused by the rules.
func machineMACs(macs []string) []string {
	var out []string
	for _, m := range macs {
		if n, err := host.NormalizeMAC(m); err == nil {
			out = append(out, n)
		}
	}
	return out
}
