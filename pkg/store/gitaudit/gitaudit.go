// Package gitaudit writes the audit trail of the etcd store into a git
// cluster directory: one instance among those sharing an etcd prefix is
// elected (etcd's election API), and it replays the audit records
// (etcdv3.AuditRecord) into its cluster directory, one commit per record,
// in etcd revision order, each record's conf.json (or cluster.json) as
// the change left it, with the change's message and trailers.
//
// Each commit carries one more trailer, "Audit-Revision: <revision>/<step>",
// naming the record it replays: an elected instance resumes after the
// last such trailer of its repository, so a record is committed once to
// a repository, and none is skipped, whichever instance held the office
// before. The records stay in etcd (nothing deletes them), so that an
// instance elected later catches its own repository up.
package gitaudit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/gitdir"
)

// Config is what the auditor needs.
type Config struct {
	// Source is the etcd store whose audit records are replayed.
	Source *etcdv3.Store
	// Target is the cluster directory written (a git-backed gitdir.Dir,
	// opened on Dir, written by nothing else).
	Target *gitdir.Dir
	// Name is this instance's name in the election (its host name and
	// port, say); it is logged by the others' auditors too.
	Name   string
	Logger *slog.Logger
	// Retry is how long to wait after a failure before campaigning again
	// (1 s when 0).
	Retry time.Duration
}

// Position is a record's place in the order: its etcd revision and its
// step in that revision. The zero Position comes before every record.
type Position struct {
	Revision int64
	Step     int
}

func (p Position) less(q Position) bool {
	return p.Revision < q.Revision || (p.Revision == q.Revision && p.Step < q.Step)
}

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Revision, p.Step) }

// TrailerKey names the trailer of the replayed record's position.
const TrailerKey = "Audit-Revision"

var trailerRE = regexp.MustCompile(`(?m)^` + TrailerKey + `: (\d+)/(\d+)$`)

// Run campaigns for the auditor's office until ctx ends; whenever it holds
// it, it replays the records after the repository's last committed one
// and then each new record as it is written. It returns nil when ctx
// ends.
func Run(ctx context.Context, c Config) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retry := c.Retry
	if retry <= 0 {
		retry = time.Second
	}
	for {
		office, err := c.Source.Campaign(ctx, c.Name)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			log.Info("elected auditor: writing the audit records into git", "name", c.Name, "dir", c.Target.Path())
			err = follow(ctx, c, office.Lost, log)
			office.Resign()
			if ctx.Err() != nil {
				return nil
			}
		}
		log.Warn("auditor's office lost or not won; campaigning again", "name", c.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// errLost: the office ended while the auditor held it.
var errLost = errors.New("gitaudit: the auditor's lease expired")

// follow replays and then waits for new records until the office is
// lost or ctx ends.
func follow(ctx context.Context, c Config, lost <-chan struct{}, log *slog.Logger) error {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-fctx.Done():
		}
	}()
	at, err := LastReplayed(c.Target.Path())
	if err != nil {
		return err
	}
	log.Info("auditor resumes", "after", at.String())
	for {
		next, n, err := replay(fctx, c, at, lost)
		if n > 0 {
			log.Info("audit records committed", "count", n, "last", next.String())
		}
		if err != nil {
			return err
		}
		at = next
		if err := c.Source.WaitAudit(fctx, at.Revision); err != nil {
			select {
			case <-lost:
				return errLost
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// replay commits into c.Target every record of c.Source after at, in
// order, and returns the position of the last one and how many it
// replayed. It stops before a record when lost is closed or ctx ends.
func replay(ctx context.Context, c Config, at Position, lost <-chan struct{}) (Position, int, error) {
	recs, err := c.Source.Audit(at.Revision - 1)
	if err != nil {
		return at, 0, err
	}
	n := 0
	for _, r := range recs {
		pos := Position{r.Revision, r.Step}
		if !at.less(pos) {
			continue
		}
		select {
		case <-lost:
			return at, n, errLost
		case <-ctx.Done():
			return at, n, ctx.Err()
		default:
		}
		if err := commit(c.Target, r, pos); err != nil {
			return at, n, fmt.Errorf("gitaudit: record %s (%s): %w", pos, r.Subject(), err)
		}
		at = pos
		n++
	}
	return at, n, nil
}

// commit writes one record into the cluster directory: the record (or
// cluster.json's settings) as the change left it, with the change's
// message and the position trailer.
func commit(d *gitdir.Dir, r etcdv3.AuditRecord, pos Position) error {
	msg := withTrailer(r.Message, TrailerKey+": "+pos.String())
	if r.Serial == "" {
		var c store.Cluster
		if err := json.Unmarshal([]byte(r.Cluster), &c); err != nil {
			return fmt.Errorf("cluster settings: %w", err)
		}
		_, err := d.UpdateCluster(msg, func(dst *store.Cluster) error { *dst = c; return nil })
		return err
	}
	h, err := host.Unmarshal([]byte(r.Record))
	if err != nil {
		return err
	}
	step := store.Step{Message: msg, Apply: func(dst *host.Host) error { *dst = h.Clone(); return nil }}
	if _, err := d.Get(r.Serial); err == nil {
		_, err = d.Update(r.Serial, step)
		return err
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	_, err = d.Create(r.Serial, step)
	return err
}

// withTrailer adds a trailer line to a commit message, in the trailer
// block the message may have already.
func withTrailer(msg, trailer string) string {
	msg = strings.TrimRight(msg, "\n")
	lines := strings.Split(msg, "\n")
	if i := strings.LastIndex(msg, "\n\n"); i >= 0 && len(lines) > 2 && strings.Contains(lines[len(lines)-1], ": ") {
		return msg + "\n" + trailer
	}
	return msg + "\n\n" + trailer
}

// LastReplayed returns the position in the last Audit-Revision trailer of
// the history of the git repository in dir (the zero Position when none).
func LastReplayed(dir string) (Position, error) {
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return Position{}, fmt.Errorf("gitaudit: open %s: %w", dir, err)
	}
	ref, err := repo.Head()
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("gitaudit: %s: HEAD: %w", dir, err)
	}
	commits, err := repo.Log(&git.LogOptions{From: ref.Hash()})
	if err != nil {
		return Position{}, fmt.Errorf("gitaudit: %s: log: %w", dir, err)
	}
	defer commits.Close()
	var found Position
	errFound := errors.New("found")
	err = commits.ForEach(func(c *object.Commit) error {
		m := trailerRE.FindAllStringSubmatch(c.Message, -1)
		if len(m) == 0 {
			return nil
		}
		last := m[len(m)-1]
		rev, err1 := strconv.ParseInt(last[1], 10, 64)
		step, err2 := strconv.Atoi(last[2])
		if err1 != nil || err2 != nil {
			return nil
		}
		found = Position{rev, step}
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return Position{}, fmt.Errorf("gitaudit: %s: log: %w", dir, err)
	}
	return found, nil
}
