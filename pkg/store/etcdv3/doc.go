// Package etcdv3 is the store.Store that several mayu instances share: the
// host records live in an etcd v3 cluster, read and written with the
// maintained client go.etcd.io/etcd/client/v3, so that every instance
// serves one fleet.
//
// Keys, under a prefix (Options.Prefix, "/mayu/" by default):
//
//	hosts/<serial>                 the host record: the JSON of a cluster directory's <serial>/conf.json (host.Marshal)
//	cluster                        cluster.json's settings (store.Cluster as JSON)
//	alloc/addr/<ip>                the serial holding the address: a record's, or a reservation's under a lease
//	alloc/profile/<name>/h:<serial> one key per record of profile <name>
//	alloc/profile/<name>/r:<id>    one key per reservation of a profile slot, under a lease
//	audit/<txn>/<step>             one audit record per step that changed something (AuditRecord)
//	macs/<mac>                     the serial whose record holds the MAC (normalized, "08:00:27:8e:15:8e")
//
// Every change is one etcd transaction. An update is a compare-and-swap on
// the record's mod revision: the steps run on the record as this instance
// knows it, and if another instance changed it meanwhile the transaction
// fails, the record is read again and the steps run again (Step.Apply is
// repeatable and free of side effects), a bounded number of times
// (store.ErrConflict after that). The transaction also moves the
// allocation keys a change of address or profile moves, and writes the
// audit records of its steps: audit records carry the record as each
// step left it, and their order is the etcd revision order (mod revision,
// then step), so that an auditor can replay them into git one commit each.
//
// Allocation (store.Reserve): the address and profile keys are read at one
// revision, the lowest free address and the first profile under its
// quantity are picked, and one transaction creates the address key
// (guarded by CreateRevision == 0) and a profile slot key (guarded by the
// profile's keys being no newer than the revision read: a slot taken
// meanwhile fails it), both under this instance's session lease, so a
// crashed instance's reservations vanish with its lease. On a lost race
// it reads again. Reservation.Create is one more transaction: if the
// serial has no record and the reservation's keys are still the ones it
// created, it puts the record and re-puts the keys without the lease. So
// no two records or reservations of any instance share an address, and
// no instance hands out a profile slot beyond the profile's quantity.
//
// MACs (macs.go): a write that gives a record a MAC it did not have
// compares the MAC's key in its transaction (absent, already the record's,
// or stale: its owner's record, compared too, no longer holds the MAC) and
// puts it, so that of two instances recording one MAC for two serials at
// once exactly one commits and the other gets a store.MACTakenError; a
// write that drops a MAC deletes its key if it is the record's. Keys
// missing for records written before they existed are created at Open
// and by the record's next write.
//
// Reads are served from a store.Table in memory that a watch on the
// records keeps current, so several instances see each other's changes
// (within the watch's delay; a write always compares against etcd). Every
// etcd call runs under a timeout (Options.Timeout); a call that cannot
// reach etcd or finds no quorum fails with store.ErrUnavailable naming the
// endpoints, which the API answers with 503.
package etcdv3
