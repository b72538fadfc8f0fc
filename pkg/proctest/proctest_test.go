package proctest

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

func TestOutputIsSafeForConcurrentUse(t *testing.T) {
	var o Output
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprintln(&o, "line")
				_ = o.String()
			}
		}()
	}
	wg.Wait()
	if n := o.Count("line\n"); n != 800 {
		t.Fatalf("Count = %d, want 800", n)
	}
}

func TestFreePortCanBeBound(t *testing.T) {
	p := FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("port %d not bindable: %v", p, err)
	}
	ln.Close()
}
