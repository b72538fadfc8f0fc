package store

import (
	"bytes"
	"errors"
	"fmt"

	"mayu/pkg/host"
)

// ErrTargetNotEmpty: Copy was asked to write into a store that holds host
// records or cluster settings already, without Overwrite.
var ErrTargetNotEmpty = errors.New("store: the target is not empty")

// CopyOptions say how Copy writes.
type CopyOptions struct {
	// RecordMessage is the audit message of each copied record (one
	// commit per record in a git-backed target).
	RecordMessage string
	// ClusterMessage is the audit message of the cluster settings, given
	// the default etcd token ("Set default etcd cluster to '%s'").
	ClusterMessage func(token string) string
	// Overwrite lets Copy write into a target that holds records: a
	// record of a serial the source has is replaced, the others stay.
	Overwrite bool
}

// CopyResult counts what Copy did.
type CopyResult struct {
	Created, Replaced, Unchanged int
	// Target is how many host records the target holds afterwards.
	Target int
	// Cluster tells whether the cluster settings were written.
	Cluster bool
}

// Copy copies every host record and the cluster settings of src into dst
// (mayu migrate), each record through one Create or Update with one audit
// message, so that the target's allocation state (addresses, profile
// counts) follows the records. It refuses a source without records and,
// unless Overwrite, a target holding records or cluster settings
// (ErrTargetNotEmpty). Afterwards it reads every record back from dst and
// fails unless each is byte for byte its source's conf.json.
func Copy(dst, src Store, o CopyOptions) (CopyResult, error) {
	var res CopyResult
	hosts := src.List()
	if len(hosts) == 0 {
		return res, errors.New("store: the source holds no host record: nothing to copy (check the source's path or prefix)")
	}
	if !o.Overwrite {
		if have := dst.List(); len(have) > 0 {
			return res, fmt.Errorf("%w: it holds %d host records (the first: %s); give the option to overwrite to replace the records of the serials the source has",
				ErrTargetNotEmpty, len(have), have[0].Serial)
		}
		if (dst.Cluster() != Cluster{}) {
			return res, fmt.Errorf("%w: it holds cluster settings (default etcd token %q); give the option to overwrite to replace them",
				ErrTargetNotEmpty, dst.Cluster().Config.DefaultEtcdClusterToken)
		}
	}
	for _, h := range hosts {
		want, err := h.Marshal()
		if err != nil {
			return res, err
		}
		step := Step{Message: o.RecordMessage, Apply: func(r *host.Host) error { *r = h.Clone(); return nil }}
		if old, err := dst.Get(h.Serial); err == nil {
			if b, err := old.Marshal(); err == nil && bytes.Equal(b, want) {
				res.Unchanged++
				continue
			}
			if _, err := dst.Update(h.Serial, step); err != nil {
				return res, fmt.Errorf("replace %s: %w", h.Serial, err)
			}
			res.Replaced++
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return res, fmt.Errorf("read %s in the target: %w", h.Serial, err)
		}
		if _, err := dst.Create(h.Serial, step); err != nil {
			return res, fmt.Errorf("copy %s: %w", h.Serial, err)
		}
		res.Created++
	}
	if c := src.Cluster(); c != dst.Cluster() {
		if _, err := dst.UpdateCluster(o.ClusterMessage(c.Config.DefaultEtcdClusterToken), func(d *Cluster) error { *d = c; return nil }); err != nil {
			return res, fmt.Errorf("copy the cluster settings: %w", err)
		}
		res.Cluster = true
	}
	return res, verifyCopy(dst, src, hosts, &res)
}

// verifyCopy reads every copied record back from dst.
func verifyCopy(dst, src Store, hosts []host.Host, res *CopyResult) error {
	for _, h := range hosts {
		want, err := h.Marshal()
		if err != nil {
			return err
		}
		got, err := dst.Get(h.Serial)
		if err != nil {
			return fmt.Errorf("store: copy not verified: %s: %w", h.Serial, err)
		}
		b, err := got.Marshal()
		if err != nil {
			return err
		}
		if !bytes.Equal(b, want) {
			return fmt.Errorf("store: copy not verified: the record of %s in the target differs from its source", h.Serial)
		}
	}
	if dst.Cluster() != src.Cluster() {
		return errors.New("store: copy not verified: the cluster settings in the target differ from the source's")
	}
	res.Target = len(dst.List())
	if res.Target < len(hosts) {
		return fmt.Errorf("store: copy not verified: the target lists %d host records, fewer than the %d copied", res.Target, len(hosts))
	}
	return nil
}
