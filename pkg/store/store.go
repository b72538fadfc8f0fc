// Package store keeps the host records and the cluster settings, and the audit
// trail of every change to them.
//
// A mutation is a list of Steps applied in order, under the store's lock, to
// a copy of the record. Each step carries the audit message users know from
// Mayu's git log ("updated host state to installing"); the git-backed store
// records one commit per step, each holding the record as that step left it.
// If any step fails, nothing is written. Lookups are served from an in-memory
// table kept in step with the records (Table).
//
// A new record gets its profile and address from the store (Reserve, then
// Reservation.Create), so that the choice is atomic against every record
// the store holds, whichever process wrote it (alloc.go).
//
// This package holds the contract (Store, Step, the errors), the pieces
// every implementation shares (Table, Leases, ApplySteps, Notifier,
// CheckSerial), and Memory; storetest checks any implementation against the contract.
// The git-backed cluster directory is in store/gitdir.
package store

import (
	"errors"
	"fmt"
	"net"

	"mayu/pkg/host"
)

// Errors returned by every Store implementation. The API maps them to
// status codes with errors.Is.
var (
	ErrNotFound = errors.New("store: host not found")
	ErrExists   = errors.New("store: host already exists")
	// ErrStorage wraps a failure to persist (disk full, git failure): the
	// change did not happen.
	ErrStorage = errors.New("store: storage failure")
	// ErrUnavailable: a store shared over the network (etcd) could not be
	// reached or has no quorum; nothing was written (the API answers 503
	// with the reason, and the caller may retry).
	ErrUnavailable = errors.New("store: shared store unavailable")
	// ErrConflict: other writers kept changing the record while this
	// change was retried (a shared store's compare-and-swap lost too
	// often); nothing was written, try again (409).
	ErrConflict = errors.New("store: the record kept changing under concurrent writers; try again")
	// ErrMACTaken: the write would record a MAC address that another
	// host's record holds. A store shared by several instances (etcd)
	// checks this inside the transaction that writes the record, so two
	// instances cannot both record one MAC; its errors are *MACTakenError.
	// The provisioner answers it as it answers a MAC it found taken
	// itself (provision.ErrMACConflict, 409).
	ErrMACTaken = errors.New("store: MAC address recorded on another host")
	// ErrLimit: the record exceeds what the store can write in one
	// transaction (the etcd store: more than 32 MAC addresses); nothing was
	// written (413).
	ErrLimit = errors.New("store: the record exceeds the store's limits")
)

// MACTakenError is the ErrMACTaken of one MAC: Owner is the record that
// holds it as the store read it (only Serial is set when that record could
// not be read).
type MACTakenError struct {
	MAC   string // normalized (host.NormalizeMAC)
	Owner host.Host
}

func (e *MACTakenError) Error() string {
	return fmt.Sprintf("%v: MAC %s is recorded on host %s (state %s)", ErrMACTaken, e.MAC, e.Owner.Serial, e.Owner.State)
}

// Is makes errors.Is(err, ErrMACTaken) hold.
func (e *MACTakenError) Is(target error) bool { return target == ErrMACTaken }

// Step is one audited change: Apply mutates the record, Message is the audit
// message (without the "<serial>: " prefix the store adds).
//
// Apply must be repeatable and free of side effects outside the record it
// is given: a store may run it more than once for one call (the git-backed
// store runs a batch again on the record as it now is when an operator
// committed under it), and runs it on a copy that is thrown away when a
// later step fails or the write does not persist. Whatever must happen
// once, after the change is durable, belongs after Create or Update
// returns. Apply returns an error to refuse the change: nothing is written
// and Create or Update returns that error.
type Step struct {
	Message string
	Apply   func(h *host.Host) error
}

// Cluster is the cluster-wide state (cluster.json of a Mayu cluster
// directory). How a backend records it on disk is the backend's business.
type Cluster struct {
	Config ClusterConfig
}

// ClusterConfig holds the cluster-wide settings of cluster.json.
type ClusterConfig struct {
	DefaultEtcdClusterToken string
	// EtcdDiscoveryURL is deprecated (Mayu < 0.11); it is read, converted to
	// DefaultEtcdClusterToken, and not written again.
	EtcdDiscoveryURL string `json:",omitempty"`
}

// Store is the persistence seam. Implementations are safe for concurrent use.
// Every Host returned is a copy the caller may modify.
type Store interface {
	// Get returns the host with this serial (already normalized).
	Get(serial string) (host.Host, error)
	// ByMAC returns the host that has this MAC address (normalized form).
	ByMAC(mac string) (host.Host, error)
	// ByIP returns the host whose InternalAddr is ip.
	ByIP(ip net.IP) (host.Host, error)
	// List returns every host, sorted by serial.
	List() []host.Host
	// ProfileCount returns how many hosts have this profile.
	ProfileCount(profile string) int

	// Create makes a new record for serial (ErrExists if there is one) and
	// applies the steps to it. The first step's message is typically
	// "host created"; the record passed to it has only Serial set.
	Create(serial string, steps ...Step) (host.Host, error)
	// Reserve picks the profile and the address of a new record of serial
	// (see AllocRequest) atomically against the stored records and the
	// reservations in flight, and holds them until the reservation is
	// used (Reservation.Create) or released; the caller must do one or
	// the other. ErrExists if serial has a record, ErrRangeFull if no
	// address is free. See alloc.go for how a backend implements it.
	Reserve(serial string, req AllocRequest) (Reservation, error)
	// Update applies the steps to the existing record (ErrNotFound if none).
	// Steps that leave the record unchanged are not committed.
	Update(serial string, steps ...Step) (host.Host, error)

	// Cluster returns cluster.json's content.
	Cluster() Cluster
	// UpdateCluster changes cluster.json; message is the full audit message
	// (for example "Set default etcd cluster to '<token>'").
	UpdateCluster(message string, apply func(c *Cluster) error) (Cluster, error)

	// Subscribe registers fn to be called (asynchronously, coalesced) after
	// any host record changed, including hand edits picked up from disk.
	Subscribe(fn func())

	// Close releases resources (file watchers, git handles).
	Close() error
}
