package provision

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/render"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
	"mayu/pkg/timeline"
)

func TestStateChangesAndRenderFailuresReachTheTimeline(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) store.Store{
		"memory": func(*testing.T) store.Store { return store.NewMemory() },
		"gitdir": func(t *testing.T) store.Store {
			d, err := gitdir.Open(t.TempDir(), gitdir.Options{})
			require.NoError(t, err)
			return d
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			t.Cleanup(func() { _ = st.Close() })
			cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, "192.168.2.99")))
			require.NoError(t, err)
			tl := timeline.New(timeline.Config{})
			var tick atomic.Int64
			p, err := New(Config{Cluster: cfg, Store: st, Timeline: tl, Now: func() time.Time { return time.Unix(1e9+tick.Add(1), 0) }})
			require.NoError(t, err)
			require.NoError(t, p.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"))

			_, _, err = p.RegisterChecked("m1", nil)
			require.NoError(t, err)
			facts := Facts{MACs: []string{"02:00:00:00:04:01"}}
			_, _, err = p.FinalConfig("m1", facts, func(render.FinalData) ([]byte, error) {
				return nil, errors.New("template: final: no such key")
			})
			require.Error(t, err)
			_, _, err = p.FinalConfig("m1", facts, func(render.FinalData) ([]byte, error) { return []byte("ok"), nil })
			require.NoError(t, err)
			_, err = p.As(Actor{Principal: "machine:m1"}).SetInstalled("m1")
			require.NoError(t, err)
			_, err = p.BootComplete("m1", Versions{})
			require.NoError(t, err)
			_, err = p.BootComplete("m1", Versions{}) // a reboot: running again
			require.NoError(t, err)
			_, err = p.SetMetadata("m1", []string{"a=b"}) // no state change: no event
			require.NoError(t, err)
			_, err = p.SetInstalled("m1") // refused: no event
			require.Error(t, err)

			type step struct{ kind, from, to, msg, principal, reason string }
			var got []step
			for _, e := range tl.Events("m1") {
				got = append(got, step{string(e.Kind), e.From, e.To, e.Message, e.Principal, e.Reason})
			}
			assert.Equal(t, []step{
				{"state", "", "configured", MsgCreated, "", ""},
				{"render-failed", "", "", "", "", "template: final: no such key"},
				{"state", "configured", "installing", MsgInstalling, "", ""},
				{"state", "installing", "installed", MsgInstalled, "machine:m1", ""},
				{"state", "installed", "running", MsgRunning, "", ""},
				{"state", "running", "running", MsgRunning, "", ""},
			}, got)
		})
	}
}
