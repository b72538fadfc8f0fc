package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"mayu/pkg/host"
	"mayu/pkg/hostinfo"
	"mayu/pkg/provision"
	"mayu/pkg/render"
)

func (s *Server) welcome(c echo.Context) error {
	return c.String(http.StatusOK, fmt.Sprintf("Welcome to Mayu %s. Machines boot from /ipxebootscript; operators use mayuctl or /index.html.\n", s.cfg.Version))
}

// ipxeBootScript is what iPXE runs after its second DHCP: boot the PXE
// kernel and initrd, which fetch the first-stage script for their serial.
func (s *Server) ipxeBootScript(c echo.Context) error {
	b := s.base
	script := "#!ipxe\n" +
		"kernel " + b + "/images/vmlinuz coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 mayu=" + b +
		" next-script=" + b + "/first-stage-script/__SERIAL__\n" +
		"initrd " + b + "/images/initrd.cpio.gz\n" +
		"boot\n"
	return c.String(http.StatusOK, script)
}

// firstStageScript registers the machine on first sight and answers its
// install script.
func (s *Server) firstStageScript(c echo.Context) error {
	h, _, err := s.prov.Register(c.Param("serial"))
	if err != nil {
		return err
	}
	d := render.FirstStageData{
		HostInfoHelperURL: s.base + "/hostinfo-helper",
		InstallImageURL:   s.base + "/images/" + h.Serial + "/install_image.bin.bz2",
		SetInstalledURL:   s.base + "/admin/host/__SERIAL__/set_installed",
		MayuURL:           s.base,
		MayuVersion:       s.cfg.Version,
		MachineID:         h.MachineID,
	}
	if s.cfg.UseIgnition {
		d.IgnitionConfigURL = s.base + "/final-ignition-config.json"
	} else {
		d.CloudConfigURL = s.base + "/final-cloud-config.yaml"
	}
	out, err := s.cfg.Renderer.FirstStage(d)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/x-shellscript; charset=utf-8", out)
}

// machineSerialScript serves mayu's serial rule (host.SerialScript), which
// the PXE image and the first-stage script source to name the machine, so
// they compute the serial exactly as this mayu checks it.
func (s *Server) machineSerialScript(c echo.Context) error {
	return c.Blob(http.StatusOK, "text/x-shellscript; charset=utf-8", []byte(host.SerialScript))
}

func (s *Server) hostinfoHelper(c echo.Context) error {
	return s.serveFileIn(c, s.cfg.StaticHTMLDir, "infopusher")
}

// finalConfig records what the installing machine reports and answers its
// final cloud-config (or Ignition config).
func (s *Server) finalConfig(ignition bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		if ignition != s.cfg.UseIgnition {
			if s.cfg.UseIgnition {
				return fmt.Errorf("%w: mayu serves Ignition (--use-ignition); ask /final-ignition-config.json", errNotServed)
			}
			return fmt.Errorf("%w: mayu serves cloud-config (started without --use-ignition); ask /final-cloud-config.yaml", errNotServed)
		}
		// The host-info helper's wire format (Mayu 0.11's).
		var req hostinfo.Info
		if err := decodeJSON(c, &req); err != nil {
			return err
		}
		if req.Serial == "" {
			return fmt.Errorf("%w: body has no Serial", errBadRequest)
		}
		f := provision.Facts{ConnectedNIC: req.ConnectedNIC}
		if req.IPMIAddress != nil {
			f.IPMIAddr = req.IPMIAddress.String()
		}
		for _, d := range req.NetDevs {
			if d.MacAddress != "" {
				f.MACs = append(f.MACs, d.MacAddress)
			}
		}
		h, err := s.prov.ReportFacts(req.Serial, f)
		if err != nil {
			return err
		}
		out, err := s.cfg.Renderer.Final(s.prov.FinalData(h))
		if err != nil {
			return err
		}
		if ignition {
			return c.Blob(http.StatusOK, "application/json", out)
		}
		return c.Blob(http.StatusOK, "text/yaml; charset=utf-8", out)
	}
}

// decodeJSON decodes a JSON body into v. Unknown fields are ignored: Mayu
// 0.11's mayuctl sends whole host records where we read one field.
func decodeJSON(c echo.Context, v interface{}) error {
	dec := json.NewDecoder(c.Request().Body)
	if err := dec.Decode(v); err != nil {
		if tooLarge(err) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge)
		}
		return fmt.Errorf("%w: body is not valid JSON: %v", errBadRequest, err)
	}
	return nil
}

// tooLarge reports whether reading a body failed on the size limit: echo's
// BodyLimit reader returns its 413 error for chunked bodies, net/http's
// MaxBytesReader a *http.MaxBytesError.
func tooLarge(err error) bool {
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
		return true
	}
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}
