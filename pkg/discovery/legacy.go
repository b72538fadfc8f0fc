package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"mayu/pkg/durable"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Mayu 0.11 kept every discovery registry in an etcd (--etcd-endpoint,
// 127.0.0.1:2379 unless given), under /_etcd/registry/<token> of the v2
// keys API: _config/size written by Mayu, one key per member written by
// the members' etcd. This Mayu keeps them under the cluster directory
// instead, so an upgrade run with the same command line would start with
// an empty registry while half-formed clusters still point at it. On the
// first start with no registry of its own, the internal mode therefore
// imports every registry of that etcd once.

// LegacyEtcdEndpoint is where Mayu 0.11 kept its registries by default.
const LegacyEtcdEndpoint = "127.0.0.1:2379"

// The import's markers, in the registry directory. They start with a dot
// and do not end in .json, so loadRegistries passes them over, and an
// operator who deletes every <token>.json does not delete them with it.
const (
	// importStartedFile exists from before the first imported registry is
	// written until the import is complete: a start that finds it redoes
	// the import instead of serving half of it.
	importStartedFile = ".import-0.11-started"
	// importDoneFile records a completed import (or an etcd that answered
	// with no registries): never import again.
	importDoneFile = ".import-0.11-done"
)

// Bounds of the import's requests. Nothing listening on the old endpoint is
// the common case and costs one refused connection; something listening but
// silent costs at most legacyHeaderTimeout at start.
const (
	legacyDialTimeout    = time.Second
	legacyHeaderTimeout  = 2 * time.Second
	legacyRequestTimeout = 10 * time.Second
	// legacyMaxBody bounds one answer: a registry is a handful of small keys.
	legacyMaxBody = 32 << 20
)

// errNoEtcd: nothing that speaks etcd's v2 keys API answers at the endpoint.
var errNoEtcd = errors.New("no etcd v2 keys API answers")

// importRecord is the content of importDoneFile, for the operator.
type importRecord struct {
	From      string            `json:"from"`
	EtcdIndex uint64            `json:"etcdIndex"`
	Imported  []string          `json:"imported"`
	Skipped   map[string]string `json:"skipped,omitempty"` // token: why
	At        time.Time         `json:"at"`
}

// legacyEtcd reads an etcd's v2 keys API.
type legacyEtcd struct {
	base   *url.URL
	client *http.Client
}

// importLegacy imports the registries of the etcd at endpoint into dir,
// once: nothing happens if importDoneFile exists, or if dir already holds
// registries of its own (own) and no import was interrupted. It returns
// the imported registries, already persisted.
//
// Nothing answering at endpoint (or something that is not an etcd v2) is
// logged and is not an error: start goes on with an empty registry. An
// etcd that answers but whose registries cannot be read, or a registry
// directory that cannot be written, is an error (ErrUnavailable,
// ErrStorage): starting without them would orphan the clusters still
// waiting for members, and the import would not be tried again.
func importLegacy(dir, endpoint string, own bool, log *slog.Logger) (map[string]*registry, error) {
	if exists(filepath.Join(dir, importDoneFile)) {
		return nil, nil
	}
	resuming := exists(filepath.Join(dir, importStartedFile))
	if own && !resuming {
		return nil, nil
	}
	base, err := endpointURL("legacy etcd endpoint", endpoint)
	if err != nil {
		return nil, err
	}
	src := &legacyEtcd{base: base, client: &http.Client{
		Timeout: legacyRequestTimeout,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: legacyDialTimeout}).DialContext,
			ResponseHeaderTimeout: legacyHeaderTimeout,
		},
	}}
	defer src.client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	root, index, err := src.get(ctx, RegistryPrefix, true)
	switch {
	case errors.Is(err, errNoEtcd) && resuming:
		return nil, fmt.Errorf("%w: the import of Mayu 0.11's etcd discovery registries from %s was interrupted and that etcd no longer answers (%w); start it again, or remove %s to keep the part already imported",
			ErrUnavailable, base, err, filepath.Join(dir, importStartedFile))
	case errors.Is(err, errNoEtcd):
		log.Info("no Mayu 0.11 etcd to import discovery registries from", "etcd", base.String(), "reason", err)
		return nil, nil
	case err != nil:
		return nil, importFailed(base, err)
	}
	rec := importRecord{From: base.String(), EtcdIndex: index, Skipped: map[string]string{}, At: time.Now().UTC()}
	var tokens []*Node
	if root != nil {
		tokens = root.Nodes
	}
	if len(tokens) > 0 {
		if err := writeMarker(dir, importStartedFile, nil); err != nil {
			return nil, err
		}
	}
	regs := map[string]*registry{}
	members := 0
	for _, tn := range tokens {
		token := path.Base(tn.Key)
		r, why, err := src.registry(ctx, token, tn)
		if err != nil {
			return nil, importFailed(base, err)
		}
		if why != "" {
			log.Warn("Mayu 0.11 etcd discovery token not imported", "etcd", base.String(), "token", token, "reason", why)
			rec.Skipped[token] = why
			continue
		}
		if err := saveRegistry(dir, r); err != nil {
			return nil, err
		}
		n := len(r.dirNode("", true, false).Nodes)
		log.Info("etcd discovery token imported from Mayu 0.11's etcd", "token", token, "size", r.Leaves["_config/size"].Value, "members", n)
		regs[token] = r
		rec.Imported = append(rec.Imported, token)
		members += n
	}
	body, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the import record: %w", ErrStorage, err)
	}
	if err := writeMarker(dir, importDoneFile, append(body, '\n')); err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(dir, importStartedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	log.Info("Mayu 0.11's etcd discovery registries imported; they are not read from that etcd again",
		"etcd", base.String(), "tokens", len(regs), "members", members, "skipped", len(rec.Skipped),
		"etcd_index", index, "record", filepath.Join(dir, importDoneFile))
	return regs, nil
}

func importFailed(base *url.URL, err error) error {
	return fmt.Errorf("%w: the etcd at %s answers but its Mayu 0.11 discovery registries cannot be imported: %w; repair it, stop it if it holds none, or give --etcd-endpoint=%s to keep using it",
		ErrUnavailable, base, err, base.Host)
}

// registry reads token's _config and builds its registry from tn, the
// token's node of the recursive listing (which leaves hidden keys out, so
// _config needs a request of its own). Node indexes are kept as they are:
// the first `size` members by createdIndex form the cluster. why says
// why a token cannot be imported; err is a failure to read.
func (src *legacyEtcd) registry(ctx context.Context, token string, tn *Node) (*registry, string, error) {
	if !ValidToken(token) {
		return nil, "not a token this discovery service can serve", nil
	}
	if !tn.Dir {
		return nil, "not a directory", nil
	}
	cfg, index, err := src.get(ctx, RegistryPrefix+"/"+token+"/_config", true)
	if err != nil {
		return nil, "", err
	}
	if cfg == nil {
		return nil, "no _config/size", nil
	}
	r := &registry{
		Version:      registryVersion,
		Token:        token,
		CreatedIndex: tn.CreatedIndex,
		Index:        index,
		Dirs:         map[string]uint64{},
		Leaves:       map[string]leaf{},
	}
	if why := r.absorb("_config", cfg); why != "" {
		return nil, why, nil
	}
	for _, n := range tn.Nodes {
		if why := r.absorb(path.Base(n.Key), n); why != "" {
			return nil, why, nil
		}
	}
	if len(r.Leaves) > maxLeaves {
		return nil, fmt.Sprintf("more than %d keys", maxLeaves), nil
	}
	// The history a waiting member may still ask for: every key's last
	// change, in index order. Deletions are not in a listing; a discovery
	// client never deletes.
	byIndex := func(a, b string) int { return cmp.Compare(r.Leaves[a].ModifiedIndex, r.Leaves[b].ModifiedIndex) }
	for _, k := range slices.SortedFunc(maps.Keys(r.Leaves), byIndex) {
		l := r.Leaves[k]
		r.Index = max(r.Index, l.ModifiedIndex)
		action := "create"
		if l.ModifiedIndex != l.CreatedIndex {
			action = "update"
		}
		r.record(l.ModifiedIndex, k, Response{Action: action, Node: r.leafNode(k, l)})
	}
	if err := r.validate(); err != nil {
		return nil, err.Error(), nil
	}
	return r, "", nil
}

// absorb adds n, found at rel below the token directory, with everything
// below it. It returns why n cannot be stored, or "".
func (r *registry) absorb(rel string, n *Node) string {
	if err := validKey(rel); err != nil {
		return err.Error()
	}
	if !n.Dir {
		l := leaf{CreatedIndex: n.CreatedIndex, ModifiedIndex: n.ModifiedIndex}
		if n.Value != nil {
			l.Value = *n.Value
		}
		if len(l.Value) > maxValueLen {
			return fmt.Sprintf("value of %q is longer than %d bytes", rel, maxValueLen)
		}
		r.Leaves[rel] = l
		return ""
	}
	r.Dirs[rel] = n.CreatedIndex
	for _, c := range n.Nodes {
		if why := r.absorb(rel+"/"+path.Base(c.Key), c); why != "" {
			return why
		}
	}
	return ""
}

// get GETs key from the v2 keys API and returns its node (nil if etcd
// says it does not exist) and the X-Etcd-Index of the answer. errNoEtcd
// means nothing answered as an etcd v2 does: no connection, no answer in
// time, or an answer without X-Etcd-Index (etcd 3.4 without --enable-v2,
// another service).
func (src *legacyEtcd) get(ctx context.Context, key string, recursive bool) (*Node, uint64, error) {
	u := keysURL(src.base, key)
	if recursive {
		u.RawQuery = "recursive=true&sorted=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := src.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errNoEtcd, err)
	}
	defer resp.Body.Close()
	index, err := strconv.ParseUint(resp.Header.Get("X-Etcd-Index"), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: GET %s answered %s without an etcd index", errNoEtcd, u.Path, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, legacyMaxBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u.Path, err)
	}
	if len(body) > legacyMaxBody {
		return nil, 0, fmt.Errorf("GET %s: answer longer than %d bytes", u.Path, legacyMaxBody)
	}
	if resp.StatusCode == http.StatusNotFound {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Code == codeKeyNotFound {
			return nil, index, nil
		}
	}
	var r Response
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || r.Node == nil {
		return nil, 0, fmt.Errorf("GET %s answered %s: %s", u.Path, resp.Status, firstLine(body))
	}
	return r.Node, index, nil
}

// writeMarker writes one of the import's markers. What counts is that the
// file exists, so the directory entry is made durable; its content is a
// record for the operator only.
func writeMarker(dir, name string, body []byte) error {
	if err := durable.WriteFile(filepath.Join(dir, name), body, 0o640, tempPrefix); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
