package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"mayu/pkg/provision"
)

func (s *Server) listHosts(c echo.Context) error {
	return c.JSON(http.StatusOK, s.prov.Hosts())
}

type adminRoute struct {
	name    string
	handler echo.HandlerFunc
}

// adminRoutes are the PUT /admin/host/:serial/<name> routes. Each decodes
// its small request type and calls one provision method; they share the
// serial handling and the 202 answer.
func (s *Server) adminRoutes() []adminRoute {
	p := s.prov
	return []adminRoute{
		{"set_installed", s.hostAction(func(serial string, _ echo.Context) error {
			_, err := p.SetInstalled(serial)
			return err
		})},
		{"boot_complete", s.hostAction(func(serial string, c echo.Context) error {
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
		{"set_metadata", s.hostAction(func(serial string, c echo.Context) error {
			tags, err := decodeField[[]string](c, "FleetMetadata")
			if err != nil {
				return err
			}
			_, err = p.SetMetadata(serial, tags)
			return err
		})},
		{"set_provider_id", s.hostAction(func(serial string, c echo.Context) error {
			id, err := decodeField[string](c, "ProviderId")
			if err != nil {
				return err
			}
			_, err = p.SetProviderID(serial, id)
			return err
		})},
		{"set_ipmi_addr", s.hostAction(func(serial string, c echo.Context) error {
			addr, err := decodeField[string](c, "IPMIAddr")
			if err != nil {
				return err
			}
			_, err = p.SetIPMIAddr(serial, addr)
			return err
		})},
		{"set_cabinet", s.hostAction(func(serial string, c echo.Context) error {
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
		{"set_state", s.hostAction(func(serial string, c echo.Context) error {
			state, err := decodeField[string](c, "State")
			if err != nil {
				return err
			}
			_, err = p.SetState(serial, state)
			return err
		})},
		{"set_etcd_cluster_token", s.hostAction(func(serial string, c echo.Context) error {
			token, err := decodeField[string](c, "EtcdClusterToken")
			if err != nil {
				return err
			}
			_, err = p.SetEtcdClusterToken(serial, token)
			return err
		})},
		{"override", s.hostAction(func(serial string, c echo.Context) error {
			overrides, err := decodeField[map[string]interface{}](c, "Overrides")
			if err != nil {
				return err
			}
			_, err = p.Override(serial, overrides)
			return err
		})},
		{"mark_fresh", s.hostAction(func(serial string, _ echo.Context) error {
			_, err := p.MarkFresh(serial)
			return err
		})},
	}
}

// hostAction validates the serial, runs fn and answers 202 Accepted.
func (s *Server) hostAction(fn func(serial string, c echo.Context) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		serial, err := provision.Serial(c.Param("serial"))
		if err != nil {
			return err
		}
		if err := fn(serial, c); err != nil {
			return err
		}
		return c.NoContent(http.StatusAccepted)
	}
}

// decodeField decodes one field of a JSON object body. The other fields are
// ignored (Mayu 0.11's mayuctl sends whole host records); a missing or
// mistyped field is a 400.
func decodeField[T any](c echo.Context, field string) (T, error) {
	var zero T
	var body map[string]json.RawMessage
	if err := decodeJSON(c, &body); err != nil {
		return zero, err
	}
	raw, ok := body[field]
	if !ok || string(raw) == "null" {
		return zero, fmt.Errorf("%w: body has no %s", errBadRequest, field)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, fmt.Errorf("%w: %s: %v", errBadRequest, field, err)
	}
	return v, nil
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
