package api

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"mayu/pkg/config"
	"mayu/pkg/provision"
)

// The image files of one OS version, under images/<version>/: the PXE
// kernel and initrd (exported for the Secure Boot chain's TFTP tree, which
// links them), and the install image.
const (
	PXEKernelFile = "coreos_production_pxe.vmlinuz"
	PXEInitrdFile = "coreos_production_pxe_image.cpio.gz"
	installImage  = "coreos_production_image.bin.bz2"
)

// qemuFiles are the files served under /images/<serial>/qemu/.
var qemuFiles = map[string]bool{
	"coreos_production_qemu.vmlinuz":                   true,
	"coreos_production_qemu.vmlinuz.sha256":            true,
	"coreos_production_qemu_usr_image.squashfs":        true,
	"coreos_production_qemu_usr_image.squashfs.sha256": true,
}

// defaultImage serves a file of the default OS version.
func (s *Server) defaultImage(name string) echo.HandlerFunc {
	return func(c echo.Context) error {
		return s.serveImage(c, filepath.Join(s.cfg.ImagesDir, s.prov.DefaultImageVersion()), name)
	}
}

// hostImage serves file name of the host's OS version from
// images/<version>/, or with ?arch=arm64 (the shipped first-stage script
// adds it on aarch64 machines) from images/<version>/arm64/
// (config.ARM64ImagesDir); any other arch is a 400.
func (s *Server) hostImage(name string) echo.HandlerFunc {
	return func(c echo.Context) error {
		version, err := s.hostVersion(c.Param("serial"))
		if err != nil {
			return err
		}
		dir := filepath.Join(s.cfg.ImagesDir, version)
		switch arch := c.QueryParam("arch"); arch {
		case "", "amd64":
		case "arm64":
			dir = filepath.Join(dir, config.ARM64ImagesDir)
		default:
			return fmt.Errorf("%w: no images for arch %q (amd64 or arm64)", errBadRequest, arch)
		}
		return s.serveImage(c, dir, name)
	}
}

func (s *Server) qemuImage(c echo.Context) error {
	file := c.Param("file")
	if !qemuFiles[file] {
		return fmt.Errorf("%w: no qemu asset %q", errNotServed, file)
	}
	version, err := s.hostVersion(c.Param("serial"))
	if err != nil {
		return err
	}
	return s.serveImage(c, filepath.Join(s.cfg.ImagesDir, "qemu", version), file)
}

// hostVersion is the OS version of a host's images (provision's rule: the
// default for a serial without a record), checked to name one directory
// under the images directory: provision refuses versions that cannot, but
// a hand-edited conf.json may still hold one.
func (s *Server) hostVersion(rawSerial string) (string, error) {
	serial, err := provision.Serial(rawSerial)
	if err != nil {
		return "", err
	}
	version, err := s.prov.ImageVersion(serial)
	if err != nil {
		return "", err
	}
	if !validPathElem(version) {
		return "", fmt.Errorf("%w: OS version %q of %s cannot name a directory", errBadRequest, version, serial)
	}
	return version, nil
}

// dirFile serves the request path (the route's wildcard) from a directory.
func (s *Server) dirFile(dir func() string) echo.HandlerFunc {
	return func(c echo.Context) error {
		return s.serveFileIn(c, dir(), c.Param("*"))
	}
}

// bootFile serves one of the boot loaders of tftproot (Config.BootFiles)
// over HTTP, for UEFI HTTP boot: the name must be one of them exactly, so
// nothing else of tftproot, and nothing outside it, is reachable.
func (s *Server) bootFile(c echo.Context) error {
	name := c.Param("file")
	if s.cfg.TFTPRoot == "" || !slices.Contains(s.cfg.BootFiles, name) {
		return fmt.Errorf("%w: %q is not a boot loader mayu serves", errNotServed, name)
	}
	return s.serveFileIn(c, s.cfg.TFTPRoot, name)
}

// serveFileIn serves name from dir. Name is cleaned as a rooted path first,
// so no request can escape dir; directories and missing files are 404s
// naming the path that was looked for. The content type comes from the
// name's extension, else from the content.
func (s *Server) serveFileIn(c echo.Context, dir, name string) error {
	return s.serveFile(c, dir, name, false)
}

// serveImage is serveFileIn with the content type always taken from the
// content, as Mayu 0.11 sent its images (so initrd.cpio.gz is
// application/x-gzip whatever the host's mime.types says about .gz).
func (s *Server) serveImage(c echo.Context, dir, name string) error {
	return s.serveFile(c, dir, name, true)
}

func (s *Server) serveFile(c echo.Context, dir, name string, sniff bool) error {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == "" {
		clean = "index.html"
	}
	full := filepath.Join(dir, filepath.FromSlash(clean))
	f, err := os.Open(full)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s does not exist", errNotServed, full)
		}
		return fmt.Errorf("%w: %s: %v", errNotServed, full, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%w: %s is a directory", errNotServed, full)
	}
	if sniff {
		head := make([]byte, 512)
		n, err := io.ReadFull(f, head)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", full, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		c.Response().Header().Set(echo.HeaderContentType, http.DetectContentType(head[:n]))
	}
	// http.ServeContent handles Range, If-Modified-Since, Content-Length
	// and HEAD; the writer passes ReadFrom through so the kernel copies the
	// file to the socket (sendfile) instead of a user-space loop.
	http.ServeContent(sendfileWriter{c.Response()}, c.Request(), fi.Name(), fi.ModTime(), f)
	return nil
}

// sendfileWriter exposes the underlying ResponseWriter's ReadFrom, which
// echo's Response hides.
type sendfileWriter struct {
	*echo.Response
}

func (w sendfileWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.Committed {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.Response.Writer.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.Size += n
		return n, err
	}
	return io.Copy(struct{ io.Writer }{w.Response}, r)
}

func validPathElem(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`+"\x00")
}
