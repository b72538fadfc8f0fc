package proctest

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// The proxy forwards; Cut closes the open connections and refuses new
// ones; Restore forwards again on the same address.
func TestTCPProxyCutAndRestore(t *testing.T) {
	p := StartTCPProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr)
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, "before")
	require.NoError(t, err)
	assert.Equal(t, "before\n", got)

	p.Cut()
	_, err = roundTrip(c, "during")
	assert.Error(t, err, "the open connection is closed")
	_, err = net.DialTimeout("tcp", p.Addr, 2*time.Second)
	assert.Error(t, err, "a new connection is refused")

	require.NoError(t, p.Restore())
	c2, err := net.Dial("tcp", p.Addr)
	require.NoError(t, err)
	defer c2.Close()
	got, err = roundTrip(c2, "after")
	require.NoError(t, err)
	assert.Equal(t, "after\n", got)
}
