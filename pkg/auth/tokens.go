// Package auth holds the credentials of mayu's admin API: named bearer
// tokens with a role, read from a token file that mayu creates on its first
// start, and the principal a request acts as, which the audit trail names.
//
// The token file has one credential per line:
//
//	# name   role       token
//	admin    admin      3q2-7wEAAAAfAAAAAQ...
//	grafana  read-only  Zm9vYmFyYmF6cXV4...
//
// Names are 1-64 characters of letters, digits and "._@-"; the role is
// "admin" (every admin route) or "read-only" (GET only); a token is 32 or
// more printable characters without spaces. Blank lines and lines starting
// with "#" are ignored. The file must not be readable by group or others.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"

	"mayu/pkg/durable"
)

// Role is what a credential may do.
type Role string

// The roles of the token file.
const (
	// Admin may use every admin route.
	Admin Role = "admin"
	// ReadOnly may read (GET /admin/hosts) and change nothing.
	ReadOnly Role = "read-only"
)

// CanWrite reports whether the role may change records.
func (r Role) CanWrite() bool { return r == Admin }

// ErrTokenFile marks a token file that cannot be used: unreadable, open to
// other users, or with a malformed line.
var ErrTokenFile = errors.New("auth: token file")

// MinTokenLen is the shortest token accepted: 32 characters of a random
// base64 string are 192 bits.
const MinTokenLen = 32

// DefaultFileName is the token file's name inside the cluster directory,
// where mayu looks for (and creates) it unless told otherwise. The cluster
// directory's git repository excludes it.
const DefaultFileName = ".admin-tokens"

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)

// entry is one credential: only the token's SHA-256 digest is kept, so
// comparing takes the same time whatever the token's length.
type entry struct {
	name   string
	role   Role
	digest [sha256.Size]byte
}

// Tokens is the set of credentials of a token file. It is safe for
// concurrent use; Reload swaps in a new set.
type Tokens struct {
	path    string
	entries atomic.Pointer[[]entry]
}

// Principal is who a request acts as: the name of a credential and its
// role, a machine, or nobody in particular.
type Principal struct {
	// Kind is "admin", "read-only", "machine" or "anonymous".
	Kind string
	// Name is the credential's name (a certificate's common name, a
	// machine's serial); empty for anonymous.
	Name string
}

// Anonymous is the principal of a request that showed no credential on a
// route that needs none (or on every route with --no-admin-auth).
var Anonymous = Principal{Kind: "anonymous"}

// Machine is the principal of a machine route about serial.
func Machine(serial string) Principal { return Principal{Kind: "machine", Name: serial} }

// String is "<kind>:<name>" ("admin:alice", "machine:0800278e158a-0") or
// "anonymous": what the audit trail records.
func (p Principal) String() string {
	if p.Name == "" {
		return p.Kind
	}
	return p.Kind + ":" + p.Name
}

// CanWrite reports whether the principal may change records on an admin
// route.
func (p Principal) CanWrite() bool { return Role(p.Kind).CanWrite() }

// Load reads the token file at path. It fails (ErrTokenFile) when the file
// is missing, group- or world-accessible, malformed, or holds no
// credential, or when two lines share a name or a token.
func Load(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Parse builds credentials from the text of a token file, for a server
// whose tokens live nowhere on disk (tests, fakes). Reload fails on them.
func Parse(text []byte) (*Tokens, error) {
	es, err := parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenFile, err)
	}
	t := &Tokens{}
	t.entries.Store(&es)
	return t, nil
}

// LoadOrCreate is Load, except that a missing file is first created (mode
// 0600, its directory 0700 if that is missing too) holding one admin token
// named "admin". created tells whether that happened.
func LoadOrCreate(path string) (t *Tokens, created bool, err error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		tok, err := NewToken()
		if err != nil {
			return nil, false, err
		}
		content := "# mayu admin API credentials: <name> <role: admin | read-only> <token>, one per line.\n" +
			"# Add a line per person or tool; send SIGHUP to mayu to reload. Keep this file 0600.\n" +
			"admin admin " + tok + "\n"
		switch err := createExclusive(path, []byte(content)); {
		case err == nil:
			created = true
		case errors.Is(err, fs.ErrExist):
			// Another process created it meanwhile: use theirs.
		default:
			return nil, false, fmt.Errorf("%w %s: create: %w", ErrTokenFile, path, err)
		}
	}
	t, err = Load(path)
	return t, created, err
}

// Path is the token file's path.
func (t *Tokens) Path() string { return t.path }

// Reload reads the token file again. On error the credentials in use stay
// as they were.
func (t *Tokens) Reload() error {
	if t.path == "" {
		return fmt.Errorf("%w: these credentials were not read from a file", ErrTokenFile)
	}
	b, err := readPrivate(t.path)
	if err != nil {
		return err
	}
	es, err := parse(b)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrTokenFile, t.path, err)
	}
	t.entries.Store(&es)
	return nil
}

// Authenticate returns the principal whose token this is. It compares the
// token's digest with every credential's in constant time, so the answer
// takes as long for a near miss as for a wild guess.
func (t *Tokens) Authenticate(token string) (Principal, bool) {
	d := sha256.Sum256([]byte(token))
	var found *entry
	es := *t.entries.Load()
	for i := range es {
		if subtle.ConstantTimeCompare(d[:], es[i].digest[:]) == 1 {
			found = &es[i]
		}
	}
	if found == nil || token == "" {
		return Principal{}, false
	}
	return Principal{Kind: string(found.role), Name: found.name}, true
}

// Len is the number of credentials.
func (t *Tokens) Len() int { return len(*t.entries.Load()) }

// NewToken returns a fresh random token: 32 bytes of crypto/rand as
// unpadded URL-safe base64 (43 characters).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ClientToken reads the token a client should send from path: either a
// file holding just the token, or a mayu token file, of which it takes the
// first admin credential (the first credential when none is admin). The
// file may be readable by others: it is the client's own copy.
func ClientToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 1 && len(strings.Fields(lines[0])) == 1 {
		return lines[0], nil
	}
	es, err := parseLines(lines)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrTokenFile, path, err)
	}
	for _, e := range es {
		if e.role == Admin {
			return e.token, nil
		}
	}
	return es[0].token, nil
}

// readPrivate reads path, refusing a file that group or others may
// access: a token there is not a secret any more.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrTokenFile, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrTokenFile, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file", ErrTokenFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: mode %04o lets other users read the tokens: chmod 600 %s", ErrTokenFile, path, perm, path)
	}
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// parsed is a line of a token file, token included (for ClientToken).
type parsed struct {
	name  string
	role  Role
	token string
}

func parse(b []byte) ([]entry, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	ps, err := parseLines(lines)
	if err != nil {
		return nil, err
	}
	es := make([]entry, len(ps))
	for i, p := range ps {
		es[i] = entry{name: p.name, role: p.role, digest: sha256.Sum256([]byte(p.token))}
	}
	return es, nil
}

// parseLines checks every line and reports them all at once; an error
// names the line, never its token.
func parseLines(lines []string) ([]parsed, error) {
	var out []parsed
	var problems []string
	names, tokens := map[string]int{}, map[string]int{}
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		n := i + 1
		f := strings.Fields(l)
		if len(f) != 3 {
			problems = append(problems, fmt.Sprintf("line %d: want \"<name> <role> <token>\", got %d fields", n, len(f)))
			continue
		}
		p := parsed{name: f[0], role: Role(f[1]), token: f[2]}
		if p.role == "readonly" {
			p.role = ReadOnly
		}
		switch {
		case !namePattern.MatchString(p.name):
			problems = append(problems, fmt.Sprintf("line %d: name %q: want 1-64 letters, digits or ._@-", n, p.name))
		case p.role != Admin && p.role != ReadOnly:
			problems = append(problems, fmt.Sprintf("line %d (%s): role %q: want admin or read-only", n, p.name, f[1]))
		case len(p.token) < MinTokenLen:
			problems = append(problems, fmt.Sprintf("line %d (%s): token of %d characters: want at least %d", n, p.name, len(p.token), MinTokenLen))
		case !printable(p.token):
			problems = append(problems, fmt.Sprintf("line %d (%s): token holds a character that is not printable ASCII", n, p.name))
		case names[p.name] != 0:
			problems = append(problems, fmt.Sprintf("line %d: name %q is on line %d already", n, p.name, names[p.name]))
		case tokens[p.token] != 0:
			problems = append(problems, fmt.Sprintf("line %d (%s): same token as line %d", n, p.name, tokens[p.token]))
		default:
			names[p.name], tokens[p.token] = n, n
			out = append(out, p)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	if len(out) == 0 {
		return nil, errors.New("no credential in it")
	}
	return out, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// createExclusive writes data to path (mode 0600) only if path does not
// exist, so that two starts never replace each other's token: the content
// is written and fsynced under a temporary name, then hard-linked to path,
// which fails with fs.ErrExist if it is there.
func createExclusive(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := durable.CreateTemp(dir, ".admin-tokens-tmp-", 0o600)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600) // whatever the umask left
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}
