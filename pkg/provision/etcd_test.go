//go:build linux

package provision

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
)

// Two provisioners on one etcd (two mayu instances) taking facts reports
// of two machines reporting one MAC at once: exactly one records it, the
// other is refused with ErrMACConflict (409) as a git-mode mayu refuses
// it, whether its instance already saw the other record (claimMACs) or
// the store found the MAC taken in its transaction.
func TestTwoInstancesOneMACReport(t *testing.T) {
	e := proctest.StartEtcd(t, "provision", "--initial-cluster", "provision={peer}")
	ep := strings.TrimPrefix(e.ClientURL, "http://")
	var ps []*Provisioner
	for i := 0; i < 2; i++ {
		var st *etcdv3.Store
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err = etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: "/fleet/", Timeout: 3 * time.Second})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NoError(t, err)
		ps = append(ps, newTestWith(t, "192.168.2.99", st))
	}
	const rounds = 10
	for i := 0; i < rounds; i++ {
		mac := fmt.Sprintf("08:00:27:00:00:%02x", i)
		serials := []string{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for j := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[j] = ps[j].ReportFacts(serials[j], Facts{MACs: []string{mac}, ConnectedNIC: "eth0"})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for j, err := range errs {
			if err == nil {
				ok++
				continue
			}
			require.ErrorIs(t, err, ErrMACConflict, "round %d: %s", i, serials[j])
			assert.Contains(t, err.Error(), "is recorded on host "+serials[1-j])
			assert.NotErrorIs(t, err, store.ErrMACTaken, "the same error as git mode's, not the store's")
		}
		require.Equal(t, 1, ok, "round %d: exactly one of %v records %s: %v", i, serials, mac, errs)
	}
}
