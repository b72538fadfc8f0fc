package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"mayu/pkg/host"
	"mayu/pkg/hostinfo"
	"mayu/pkg/machineauth"
	"mayu/pkg/provision"
	"mayu/pkg/render"
)

// textPlain is the content type of every text answer: what Go's content
// sniffing gave Mayu 0.11's answers (scripts, configs, host list, errors),
// which wrote none of their own.
const textPlain = "text/plain; charset=utf-8"

// welcome answers what Mayu 0.11 answered, word for word: scripts probing
// for a running mayu may match on it.
func (s *Server) welcome(c echo.Context) error {
	return c.Blob(http.StatusOK, textPlain, []byte("this is the iPXE server of mayu "+s.cfg.Version))
}

// ipxeBootScript is what iPXE runs after its second DHCP: boot the PXE
// kernel and initrd, which fetch the first-stage script for their serial.
// initrd=initrd.cpio.gz names the initrd (iPXE names an image by the last
// part of its URL) for a kernel that iPXE starts as an EFI program: its
// EFI stub loads the initrd named there from iPXE's file system, and iPXE
// builds without the initrd media protocol give it no other way (iPXE
// manual, "kernel"/"initrd" commands; Linux,
// Documentation/admin-guide/efi-stub.rst). In BIOS mode iPXE passes the
// initrd itself and the kernel ignores the word.
// With TLS the kernel command line carries mayu-pin=, the pin of mayu's
// key, by which the PXE image checks mayu before it trusts anything from
// it; the kernel and initrd come from the boot URL (plain HTTP when
// ServeBoot serves them).
//
// With network.installed_boot local, DHCP answers installed machines too,
// and the script decides by the machine's MAC (the ?mac= parameter): a
// request without one is answered with a script that asks again with the
// MAC of the NIC iPXE booted from (${netX/mac}); an installed or running
// machine is told to boot its local disk (localBootScript); every other
// machine gets the install script.
func (s *Server) ipxeBootScript(c echo.Context) error {
	b, boot := s.base, s.cfg.BootBaseURL
	if boot == "" {
		boot = b
	}
	if s.prov.BootsInstalledLocally() {
		mac := c.QueryParam("mac")
		if mac == "" {
			script := "#!ipxe\nchain " + boot + "/ipxebootscript?mac=${netX/mac}\n"
			return c.Blob(http.StatusOK, textPlain, []byte(script))
		}
		h, local, err := s.prov.LocalBoot(mac)
		if err != nil {
			return err
		}
		if local {
			return c.Blob(http.StatusOK, textPlain, []byte(localBootScript(h)))
		}
	}
	script := "#!ipxe\n" +
		"kernel " + boot + "/images/vmlinuz initrd=initrd.cpio.gz " + provision.InstallKernelArgs(b, s.cfg.TLSPin) + "\n" +
		"initrd " + boot + "/images/initrd.cpio.gz\n" +
		"boot\n"
	return c.Blob(http.StatusOK, textPlain, []byte(script))
}

// localBootScript sends iPXE to the machine's local disk (iPXE manual:
// sanboot, exit; the ${platform} setting is "pcbios" or "efi"). Under a
// BIOS, sanboot boots the first hard disk (0x80) through INT 13h without
// describing it as a SAN disk; under UEFI, exit 1 returns to the firmware
// with a failure, so that it goes on with its next boot entry, the
// installed system's: a boot entry that returns success ends the boot
// order and the firmware shows its boot menu instead (UEFI specification
// 2.10, 3.1.1 "Boot Manager Programming"; seen with OVMF in the sandbox).
// If the BIOS sanboot fails, exit hands over to the BIOS boot order the
// same way.
func localBootScript(h host.Host) string {
	return "#!ipxe\n" +
		"echo mayu: " + h.Serial + " is " + string(h.State) + ": booting from the local disk (network.installed_boot: local)\n" +
		"iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\n" +
		"exit 1\n"
}

// firstStageScript registers the machine on first sight and answers its
// install script, with the credential the machine proves itself by from
// then on. The request must come from the machine (Config.Machines), and
// a serial mayu has no record of counts against the source's limit. A
// script that fails to render registers nothing.
func (s *Server) firstStageScript(c echo.Context) error {
	serial, err := provision.MachineSerial(c.Param("serial"))
	if err != nil {
		return err
	}
	if err := s.limitRegistration(c, serial); err != nil {
		return err
	}
	var token string
	if s.cfg.Machines != nil {
		if token, err = s.cfg.Machines.Issue(machineRequest(c, serial, machineauth.FirstStage)); err != nil {
			return err
		}
	}
	var out []byte
	_, _, err = s.provAs(c, serial).RegisterChecked(serial, func(h host.Host) (err error) {
		d := s.firstStageData(h)
		d.MachineToken = token
		if out, err = s.cfg.Renderer.FirstStage(d); err != nil {
			s.prov.RenderFailed(serial, "first-stage", err)
		}
		return err
	})
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, textPlain, out)
}

// firstStageData is what the first-stage script of h is rendered with.
func (s *Server) firstStageData(h host.Host) render.FirstStageData {
	d := render.FirstStageData{
		HostInfoHelperURL: s.base + "/hostinfo-helper",
		InstallImageURL:   s.base + "/images/" + h.Serial + "/install_image.bin.bz2",
		SetInstalledURL:   s.base + "/admin/host/__SERIAL__/set_installed",
		MayuURL:           s.base,
		MayuVersion:       s.cfg.Version,
		MachineID:         h.MachineID,
		CACert:            s.prov.CACert(),
	}
	if s.cfg.UseIgnition {
		d.IgnitionConfigURL = s.base + "/final-ignition-config.json"
	} else {
		d.CloudConfigURL = s.base + "/final-cloud-config.yaml"
	}
	return d
}

// machineSerialScript serves mayu's serial rule (host.SerialScript), which
// the PXE image and the first-stage script source to name the machine, so
// they compute the serial exactly as this mayu checks it.
func (s *Server) machineSerialScript(c echo.Context) error {
	return c.Blob(http.StatusOK, "text/x-shellscript; charset=utf-8", []byte(host.SerialScript))
}

// hostinfoHelper serves the host-info helper (infopusher) from
// --static-html-path: the x86-64 build, or with ?arch=arm64 (the shipped
// first-stage script adds it on aarch64 machines) the arm64 build in
// static_html/arm64/infopusher. Any other arch is a 400.
func (s *Server) hostinfoHelper(c echo.Context) error {
	switch arch := c.QueryParam("arch"); arch {
	case "", "amd64":
		return s.serveFileIn(c, s.cfg.StaticHTMLDir, "infopusher")
	case "arm64":
		return s.serveFileIn(c, s.cfg.StaticHTMLDir, "arm64/infopusher")
	default:
		return fmt.Errorf("%w: no host-info helper for arch %q (amd64 or arm64)", errBadRequest, arch)
	}
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
		if serial, err := provision.MachineSerial(req.Serial); err == nil {
			c.Set(eventSerialKey, serial)
		}
		f := provision.Facts{ConnectedNIC: req.ConnectedNIC}
		if req.IPMIAddress != nil {
			f.IPMIAddr = req.IPMIAddress.String()
		}
		// Every NIC's MAC goes to the rules, an empty one included: it is
		// refused there, not dropped here.
		for _, d := range req.NetDevs {
			f.MACs = append(f.MACs, d.MacAddress)
		}
		if err := s.authorizeFacts(c, req.Serial, f.MACs); err != nil {
			return err
		}
		out, _, err := s.provAs(c, req.Serial).FinalConfig(req.Serial, f, s.cfg.Renderer.Final)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, textPlain, out)
	}
}

// authorizeFacts checks that a facts report comes from the machine it
// names and lists its own MACs (Config.Machines); a serial mayu has no
// record of counts against the source's limit. A malformed serial is left
// to the rules, which answer it 400.
func (s *Server) authorizeFacts(c echo.Context, rawSerial string, macs []string) error {
	serial, err := provision.MachineSerial(rawSerial)
	if err != nil {
		return nil
	}
	if err := s.limitRegistration(c, serial); err != nil {
		return err
	}
	if s.cfg.Machines == nil {
		return nil
	}
	r := machineRequest(c, serial, machineauth.Facts)
	if err := s.cfg.Machines.Authorize(r); err != nil {
		return err
	}
	return s.cfg.Machines.CheckFacts(r, machineMACs(macs))
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
