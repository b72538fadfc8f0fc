package store

import (
	"errors"
	"strings"
	"time"
)

// ErrNoHistory is returned by History when the store keeps no history (a
// cluster directory run with --no-git, the memory store).
var ErrNoHistory = errors.New("store: no history kept")

// Commit is one change of a record as its audit trail holds it. Its JSON
// form is the answer of GET /admin/host/<serial>/history:
//
//	{"hash": "3f2a…", "time": "2026-11-29T22:50:01Z",
//	 "message": "updated host state to installing",   // the subject without "<serial>: "
//	 "principal": "machine:0800278e158a-0",           // the Principal trailer, if any
//	 "remote_address": "192.168.2.120"}               // the Remote-Address trailer, if any
type Commit struct {
	Hash          string    `json:"hash"`
	Time          time.Time `json:"time"`
	Message       string    `json:"message"`
	Principal     string    `json:"principal,omitempty"`
	RemoteAddress string    `json:"remote_address,omitempty"`
}

// Historian is a Store that keeps each record's history (the git-backed
// cluster directory).
type Historian interface {
	// History returns the commits of serial's record, newest first, at
	// most max of them (max <= 0: all), looking back through at most scan
	// commits of the whole history (scan <= 0: all). ErrNoHistory when
	// the store keeps none.
	History(serial string, max, scan int) ([]Commit, error)
}

// ParseCommitMessage splits a commit message of serial's record into its
// Commit fields: the subject without "<serial>: " and the Principal and
// Remote-Address trailers (pkg/provision writes them). ok is false for a
// commit that is not about serial.
func ParseCommitMessage(serial, msg string) (c Commit, ok bool) {
	subject, body, _ := strings.Cut(msg, "\n")
	rest, ok := strings.CutPrefix(subject, serial+": ")
	if !ok {
		return Commit{}, false
	}
	c.Message = strings.TrimSpace(rest)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "Principal: "); ok {
			c.Principal = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "Remote-Address: "); ok {
			c.RemoteAddress = strings.TrimSpace(v)
		}
	}
	return c, true
}
