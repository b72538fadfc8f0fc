//go:build linux

package etcdv3_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store/etcdv3"
)

// BenchmarkRecordWithMACs measures one machine's writes as mayu makes
// them: the record created with two MACs, one change that keeps them
// (a state change) and one that moves one of them (a replaced card).
// Run it nice'd on a quiet machine: the figure is etcd's round trips.
func BenchmarkRecordWithMACs(b *testing.B) {
	e := proctest.StartEtcd(b, "bench", "--initial-cluster", "bench={peer}")
	ep := strings.TrimPrefix(e.ClientURL, "http://")
	var s *etcdv3.Store
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err = etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: "/bench/", Timeout: 3 * time.Second})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(b, err)
	defer s.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		serial := fmt.Sprintf("b%d", i)
		mac := func(n int) string {
			return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", n, byte(i>>16), byte(i>>8), byte(i))
		}
		_, err := s.Create(serial, set("host created", func(h *host.Host) { h.MacAddresses = []string{mac(1), mac(2)} }))
		require.NoError(b, err)
		_, err = s.Update(serial, set("updated host state to installing", func(h *host.Host) { h.State = host.Installing }))
		require.NoError(b, err)
		_, err = s.Update(serial, set("updated host mac addresses", func(h *host.Host) { h.MacAddresses = []string{mac(1), mac(3)} }))
		require.NoError(b, err)
	}
}
