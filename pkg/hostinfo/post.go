package hostinfo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxAnswer bounds the rendered config read back; real ones are kilobytes.
const maxAnswer = 16 << 20

// ErrPost: mayu did not accept the facts.
var ErrPost = errors.New("hostinfo: post failed")

// Post sends info as JSON to url and returns the answer's body (the
// machine's final cloud-config or Ignition config). The body is read whole
// before it is returned, so a caller writing it to disk never writes half a
// config; a non-2xx answer is an error carrying the status and the first
// line of the reason.
func Post(ctx context.Context, hc *http.Client, url string, info Info) ([]byte, error) {
	if info.NetDevs == nil {
		info.NetDevs = []NetDev{} // [] rather than null, for strict decoders
	}
	body, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %w", ErrPost, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPost, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPost, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %w", ErrPost, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%w: %s answered %s%s", ErrPost, url, resp.Status, firstLine(answer))
	}
	if len(answer) > maxAnswer {
		return nil, fmt.Errorf("%w: answer larger than %d bytes", ErrPost, maxAnswer)
	}
	return answer, nil
}

func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 300 {
				l = l[:300] + "..."
			}
			return ": " + l
		}
	}
	return ""
}
