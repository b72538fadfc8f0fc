package discovery

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// registry is one token's key space, the part of an etcd v2 store under
// /_etcd/registry/<token>. It is a value: Internal clones it, applies a
// change to the clone, persists the clone and only then swaps it in, so a
// failed write leaves nothing half-done. The JSON form is the file format.
type registry struct {
	Version int    `json:"version"`
	Token   string `json:"token"`
	// CreatedIndex is the index of the token directory itself.
	CreatedIndex uint64 `json:"createdIndex"`
	// Index is the last index that changed this registry. Indexes are global
	// across registries, as in etcd, so the daemon's current index after a
	// restart is the highest Index found on disk.
	Index uint64 `json:"index"`
	// Cleared is the index of the newest event dropped from Events: a watch
	// from at or before it might have missed an event and gets etcd's
	// "outdated and cleared" error instead of a wrong answer.
	Cleared uint64 `json:"cleared"`
	// Dirs maps relative directory keys ("_config") to their created index.
	Dirs map[string]uint64 `json:"dirs"`
	// Leaves maps relative keys ("_config/size", "<member-id>") to values.
	Leaves map[string]leaf `json:"leaves"`
	// Events is the recent history, oldest first, for wait=true&waitIndex=N.
	// It is persisted so that a member waiting across a Mayu restart still
	// sees every registration made since its last answer.
	Events []event `json:"events"`
}

type leaf struct {
	Value         string `json:"value"`
	CreatedIndex  uint64 `json:"createdIndex"`
	ModifiedIndex uint64 `json:"modifiedIndex"`
}

type event struct {
	Index    uint64   `json:"index"`
	Key      string   `json:"key"` // relative to the token directory
	Response Response `json:"response"`
}

const (
	registryVersion = 1
	// historyLimit bounds Events. A discovery registry sees a few events per
	// member; etcd keeps 1000 for its whole store.
	historyLimit = 256
	// maxLeaves and maxValueLen bound what a client can make us store and
	// rewrite on every change.
	maxLeaves   = 1024
	maxValueLen = 4096
)

// condition holds the compare-and-swap parameters of a PUT or DELETE.
type condition struct {
	prevExist    string // "", "true" or "false"
	prevValue    string
	hasPrevValue bool
	prevIndex    uint64
}

func newRegistry(token string, size int, index uint64) *registry {
	r := &registry{
		Version:      registryVersion,
		Token:        token,
		CreatedIndex: index,
		Index:        index,
		Dirs:         map[string]uint64{"_config": index},
		Leaves:       map[string]leaf{},
	}
	v := fmt.Sprint(size)
	r.Leaves["_config/size"] = leaf{Value: v, CreatedIndex: index, ModifiedIndex: index}
	r.record(index, "_config/size", Response{Action: "create", Node: r.leafNode("_config/size", r.Leaves["_config/size"])})
	return r
}

func (r *registry) clone() *registry {
	c := *r
	c.Dirs = maps.Clone(r.Dirs)
	c.Leaves = maps.Clone(r.Leaves)
	c.Events = slices.Clone(r.Events)
	return &c
}

// fullKey is the key etcd would show: /_etcd/registry/<token>[/<rel>].
func (r *registry) fullKey(rel string) string {
	if rel == "" {
		return RegistryPrefix + "/" + r.Token
	}
	return RegistryPrefix + "/" + r.Token + "/" + rel
}

func (r *registry) leafNode(rel string, l leaf) *Node {
	return &Node{Key: r.fullKey(rel), Value: strPtr(l.Value), ModifiedIndex: l.ModifiedIndex, CreatedIndex: l.CreatedIndex}
}

func (r *registry) dirIndex(rel string) uint64 {
	if rel == "" {
		return r.CreatedIndex
	}
	return r.Dirs[rel]
}

// get answers a GET of rel. Children whose name starts with "_" are hidden
// from listings, as in etcd: that is why the token directory lists members
// only, not _config.
func (r *registry) get(rel string, recursive bool) (*Node, *Error) {
	if l, ok := r.Leaves[rel]; ok {
		return r.leafNode(rel, l), nil
	}
	if _, ok := r.Dirs[rel]; ok || rel == "" {
		return r.dirNode(rel, true, recursive), nil
	}
	return nil, newError(codeKeyNotFound, r.fullKey(rel), 0)
}

func (r *registry) dirNode(rel string, withChildren, recursive bool) *Node {
	idx := r.dirIndex(rel)
	n := &Node{Key: r.fullKey(rel), Dir: true, ModifiedIndex: idx, CreatedIndex: idx}
	if !withChildren {
		return n
	}
	for k, l := range r.Leaves {
		if name, ok := childName(rel, k); ok && !strings.HasPrefix(name, "_") {
			n.Nodes = append(n.Nodes, r.leafNode(k, l))
		}
	}
	for k := range r.Dirs {
		if name, ok := childName(rel, k); ok && !strings.HasPrefix(name, "_") {
			n.Nodes = append(n.Nodes, r.dirNode(k, recursive, recursive))
		}
	}
	// etcd leaves unsorted listings in map order; sorted is what sorted=true
	// asks for and is as good an order as any otherwise.
	slices.SortFunc(n.Nodes, func(a, b *Node) int { return cmp.Compare(a.Key, b.Key) })
	return n
}

// set answers a PUT of value at rel, at index next.
func (r *registry) set(rel, value string, cond condition, next uint64) (Response, int, *Error) {
	if rel == "" {
		return Response{}, 0, newError(codeNotFile, r.fullKey(rel), 0)
	}
	if _, ok := r.Dirs[rel]; ok {
		return Response{}, 0, newError(codeNotFile, r.fullKey(rel), 0)
	}
	for _, p := range parents(rel) {
		if _, ok := r.Leaves[p]; ok {
			return Response{}, 0, newError(codeNotDir, r.fullKey(p), 0)
		}
	}
	if len(value) > maxValueLen {
		return Response{}, 0, newError(codeInvalidField, fmt.Sprintf("value is longer than %d bytes", maxValueLen), 0)
	}
	old, exists := r.Leaves[rel]
	if !exists && len(r.Leaves) >= maxLeaves {
		return Response{}, 0, newError(codeInvalidField, fmt.Sprintf("registry already holds %d keys", maxLeaves), 0)
	}
	action := "set"
	switch cond.prevExist {
	case "false":
		if exists {
			return Response{}, 0, newError(codeNodeExist, r.fullKey(rel), 0)
		}
		action = "create"
	case "true":
		if !exists {
			return Response{}, 0, newError(codeKeyNotFound, r.fullKey(rel), 0)
		}
		action = "update"
	}
	if cond.hasPrevValue || cond.prevIndex != 0 {
		if !exists {
			return Response{}, 0, newError(codeKeyNotFound, r.fullKey(rel), 0)
		}
		if e := compare(cond, old); e != nil {
			return Response{}, 0, e
		}
		action = "compareAndSwap"
	}

	nl := leaf{Value: value, CreatedIndex: next, ModifiedIndex: next}
	if exists && action != "set" {
		// set replaces the node (new createdIndex), update and
		// compareAndSwap modify it in place: etcd does exactly this.
		nl.CreatedIndex = old.CreatedIndex
	}
	for _, p := range parents(rel) {
		if _, ok := r.Dirs[p]; !ok {
			r.Dirs[p] = next
		}
	}
	r.Leaves[rel] = nl
	resp := Response{Action: action, Node: r.leafNode(rel, nl)}
	if exists {
		resp.PrevNode = r.leafNode(rel, old)
	}
	r.record(next, rel, resp)
	status := 200
	if !exists {
		status = 201
	}
	return resp, status, nil
}

// del answers a DELETE of rel. Directories are not deleted over the
// protocol: a registry is removed by an operator, not by a member.
func (r *registry) del(rel string, cond condition, next uint64) (Response, *Error) {
	if _, ok := r.Dirs[rel]; ok || rel == "" {
		return Response{}, newError(codeNotFile, r.fullKey(rel), 0)
	}
	old, ok := r.Leaves[rel]
	if !ok {
		return Response{}, newError(codeKeyNotFound, r.fullKey(rel), 0)
	}
	action := "delete"
	if cond.hasPrevValue || cond.prevIndex != 0 {
		if e := compare(cond, old); e != nil {
			return Response{}, e
		}
		action = "compareAndDelete"
	}
	delete(r.Leaves, rel)
	resp := Response{
		Action:   action,
		Node:     &Node{Key: r.fullKey(rel), ModifiedIndex: next, CreatedIndex: old.CreatedIndex},
		PrevNode: r.leafNode(rel, old),
	}
	r.record(next, rel, resp)
	return resp, nil
}

func compare(cond condition, old leaf) *Error {
	var causes []string
	if cond.hasPrevValue && cond.prevValue != old.Value {
		causes = append(causes, fmt.Sprintf("[%s != %s]", cond.prevValue, old.Value))
	}
	if cond.prevIndex != 0 && cond.prevIndex != old.ModifiedIndex {
		causes = append(causes, fmt.Sprintf("[%d != %d]", cond.prevIndex, old.ModifiedIndex))
	}
	if len(causes) == 0 {
		return nil
	}
	return newError(codeTestFailed, strings.Join(causes, " "), 0)
}

func (r *registry) record(index uint64, rel string, resp Response) {
	r.Events = append(r.Events, event{Index: index, Key: rel, Response: resp})
	if n := len(r.Events) - historyLimit; n > 0 {
		r.Cleared = r.Events[n-1].Index
		r.Events = slices.Delete(r.Events, 0, n)
	}
}

// watch finds the first event at or after waitIndex that a watch of rel
// sees, or nil if there is none yet. A recursive watch does not see hidden
// keys below it (etcd's live watches do not either), so a member waiting on
// the token directory is never woken by _config.
func (r *registry) watch(rel string, recursive bool, waitIndex uint64) (*event, *Error) {
	if waitIndex <= r.Cleared {
		return nil, newError(codeIndexCleared, fmt.Sprintf("the requested history has been cleared [%d/%d]", r.Cleared+1, waitIndex), 0)
	}
	for i := range r.Events {
		ev := &r.Events[i]
		if ev.Index < waitIndex {
			continue
		}
		if ev.Key == rel {
			return ev, nil
		}
		if !recursive {
			continue
		}
		below, ok := ev.Key, rel == ""
		if !ok {
			below, ok = strings.CutPrefix(ev.Key, rel+"/")
		}
		if ok && !hidden(below) {
			return ev, nil
		}
	}
	return nil, nil
}

// childName returns the name of k if k is a direct child of dir.
func childName(dir, k string) (string, bool) {
	rest := k
	if dir != "" {
		var ok bool
		if rest, ok = strings.CutPrefix(k, dir+"/"); !ok {
			return "", false
		}
	}
	if rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}

// parents lists the directories above rel, outermost first: "a/b/c" has
// "a" and "a/b".
func parents(rel string) []string {
	var ps []string
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			ps = append(ps, rel[:i])
		}
	}
	return ps
}

func hidden(rel string) bool {
	for seg := range strings.SplitSeq(rel, "/") {
		if strings.HasPrefix(seg, "_") {
			return true
		}
	}
	return false
}

// validate checks a registry read from disk before it is trusted.
func (r *registry) validate() error {
	if r.Version != registryVersion {
		return fmt.Errorf("unknown version %d", r.Version)
	}
	if !ValidToken(r.Token) {
		return fmt.Errorf("%w: %q", ErrBadToken, r.Token)
	}
	if r.Dirs == nil || r.Leaves == nil {
		return fmt.Errorf("missing dirs or leaves")
	}
	if _, ok := r.Leaves["_config/size"]; !ok {
		return fmt.Errorf("no _config/size")
	}
	for k, l := range r.Leaves {
		if err := validKey(k); err != nil {
			return err
		}
		if l.ModifiedIndex > r.Index || l.CreatedIndex > l.ModifiedIndex {
			return fmt.Errorf("key %q has indexes beyond the registry's", k)
		}
	}
	for i, ev := range r.Events {
		if ev.Index > r.Index || ev.Response.Node == nil || (i > 0 && ev.Index <= r.Events[i-1].Index) {
			return fmt.Errorf("event history out of order")
		}
	}
	return nil
}
