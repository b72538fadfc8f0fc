package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"mayu/pkg/host"
	"mayu/pkg/provision"
)

// listHosts answers the JSON array of every record, as text/plain like
// Mayu 0.11 (see textPlain). The array is encoded listBatch records at a
// time, the same bytes json.Marshal gives for the whole: at 10,000 hosts
// the answer is 3.7 MB, and encoding it whole held that twice over per
// request on top of the records' copy.
func (s *Server) listHosts(c echo.Context) error {
	hosts := s.prov.Hosts()
	// A record has only strings, numbers, times and lists of them, which
	// always encode; were one to fail after the status went out, the
	// answer ends there, not valid JSON, and the error is logged.
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, textPlain)
	res.WriteHeader(http.StatusOK)
	w := bufio.NewWriterSize(res, 64<<10)
	w.WriteByte('[')
	for i := 0; i < len(hosts); i += listBatch {
		b, err := json.Marshal(hosts[i:min(i+listBatch, len(hosts))])
		if err != nil {
			return err
		}
		if i > 0 {
			w.WriteByte(',')
		}
		w.Write(b[1 : len(b)-1]) // without the batch's brackets
	}
	w.WriteString("]\n")
	return w.Flush()
}

// listBatch is how many records listHosts encodes at once (~90 KB).
const listBatch = 256

// pool answers provision.Pool as JSON: the addresses of ip_range left,
// each profile's free slots and the machines by state and profile (the
// dashboard's counts).
func (s *Server) pool(c echo.Context) error {
	return c.JSON(http.StatusOK, s.prov.Pool())
}

type adminRoute struct {
	name    string
	handler echo.HandlerFunc
}

// machineHostRoutes are the PUT /admin/host/:serial/<name> routes that
// installing machines call (the first-stage script, mayuctl boot-complete):
// no admin credential; the machine proves it is the serial it names
// (machineRoute, Config.Machines), and their commits name machine:<serial>.
func (s *Server) machineHostRoutes() []adminRoute {
	return []adminRoute{
		{"set_installed", s.hostAction(func(p *provision.Provisioner, serial string, _ echo.Context) error {
			_, err := p.SetInstalled(serial)
			return err
		})},
		{"boot_complete", s.hostAction(func(p *provision.Provisioner, serial string, c echo.Context) error {
			var req struct {
				CoreOSVersion, MayuVersion, DockerVersion, FleetVersion,
				EtcdVersion, RktVersion, K8sVersion, YochuVersion string
			}
			if err := decodeOptionalJSON(c, &req); err != nil {
				return err
			}
			_, err := p.BootComplete(serial, provision.Versions(req))
			return err
		})},
	}
}

// adminRoutes are the operator's PUT /admin/host/:serial/<name> routes
// (mayuctl set, override, mark-fresh), behind adminWrite. Each decodes its
// small request type and calls one provision method; they share the serial
// handling and the 202 answer.
func (s *Server) adminRoutes() []adminRoute {
	type P = provision.Provisioner
	return []adminRoute{
		{"set_metadata", setField(s, "FleetMetadata", (*P).SetMetadata)},
		{"set_provider_id", setField(s, "ProviderId", (*P).SetProviderID)},
		{"set_ipmi_addr", s.hostAction(func(p *P, serial string, c echo.Context) error {
			// Absent, null and "" clear the address: Mayu 0.11's mayuctl
			// sends a record without IPMIAddr for an empty address.
			addr, err := decodeOptionalField[string](c, "IPMIAddr")
			if err != nil {
				return err
			}
			_, err = p.SetIPMIAddr(serial, addr)
			return err
		})},
		{"set_mac_addresses", s.hostAction(func(p *P, serial string, c echo.Context) error {
			// null and [] unbind the serial from its MACs (re-bind at the
			// next facts report).
			macs, err := decodeOptionalField[[]string](c, "MacAddresses")
			if err != nil {
				return err
			}
			_, err = p.SetMACs(serial, macs)
			return err
		})},
		{"set_cabinet", s.hostAction(func(p *P, serial string, c echo.Context) error {
			var req struct {
				Cabinet          *uint
				MachineOnCabinet *uint
			}
			if err := decodeJSON(c, &req); err != nil {
				return err
			}
			if req.Cabinet == nil {
				return fmt.Errorf("%w: body has no Cabinet", errBadRequest)
			}
			_, err := p.SetCabinet(serial, *req.Cabinet, req.MachineOnCabinet)
			return err
		})},
		{"set_state", setField(s, "State", (*P).SetState)},
		{"set_etcd_cluster_token", setField(s, "EtcdClusterToken", (*P).SetEtcdClusterToken)},
		{"override", setField(s, "Overrides", (*P).Override)},
		{"mark_fresh", s.hostAction(func(p *P, serial string, _ echo.Context) error {
			_, err := p.MarkFresh(serial)
			return err
		})},
	}
}

// setField is the route of a setter that takes one field of the body
// (decodeField) and passes it to set.
func setField[T any](s *Server, field string, set func(p *provision.Provisioner, serial string, v T) (host.Host, error)) echo.HandlerFunc {
	return s.hostAction(func(p *provision.Provisioner, serial string, c echo.Context) error {
		v, err := decodeField[T](c, field)
		if err != nil {
			return err
		}
		_, err = set(p, serial, v)
		return err
	})
}

// hostAction validates the serial, runs fn with the provisioner acting for
// the request's principal, and answers 202 Accepted.
func (s *Server) hostAction(fn func(p *provision.Provisioner, serial string, c echo.Context) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		serial, err := provision.Serial(c.Param("serial"))
		if err != nil {
			return err
		}
		if err := fn(s.provAs(c, serial), serial, c); err != nil {
			return err
		}
		return c.NoContent(http.StatusAccepted)
	}
}

// decodeField decodes one field of a JSON object body. The other fields are
// ignored (Mayu 0.11's mayuctl sends whole host records); a missing or
// mistyped field is a 400.
func decodeField[T any](c echo.Context, field string) (T, error) {
	v, present, err := decodeFieldIf[T](c, field)
	if err == nil && !present {
		err = fmt.Errorf("%w: body has no %s", errBadRequest, field)
	}
	return v, err
}

// decodeOptionalField is decodeField for a field whose absence (or null)
// means its zero value.
func decodeOptionalField[T any](c echo.Context, field string) (T, error) {
	v, _, err := decodeFieldIf[T](c, field)
	return v, err
}

// decodeFieldIf decodes one field of a JSON object body and tells whether
// it was there (and not null).
func decodeFieldIf[T any](c echo.Context, field string) (T, bool, error) {
	var zero T
	var body map[string]json.RawMessage
	if err := decodeJSON(c, &body); err != nil {
		return zero, false, err
	}
	raw, ok := body[field]
	if !ok || string(raw) == "null" {
		return zero, false, nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, false, fmt.Errorf("%w: %s: %v", errBadRequest, field, err)
	}
	return v, true, nil
}

// decodeOptionalJSON decodes a body that may be empty (boot-complete
// without --update-versions sends nothing worth reading).
func decodeOptionalJSON(c echo.Context, v interface{}) error {
	b, err := io.ReadAll(c.Request().Body)
	if err != nil {
		if tooLarge(err) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge)
		}
		return fmt.Errorf("%w: reading body: %v", errBadRequest, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: body is not valid JSON: %v", errBadRequest, err)
	}
	return nil
}
