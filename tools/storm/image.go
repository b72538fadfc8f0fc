package storm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// ImageResult is what concurrent full downloads of one file measured.
type ImageResult struct {
	URL     string   `json:"url"`
	Clients int      `json:"clients"`
	Bytes   int64    `json:"bytes"` // in total
	Elapsed Duration `json:"elapsed"`
	// MBps is the aggregate throughput in MB/s (10^6 bytes).
	MBps float64 `json:"mb_per_second"`
	// SlowestMBps is the slowest client's own throughput.
	SlowestMBps float64  `json:"slowest_client_mb_per_second"`
	Errors      []string `json:"errors,omitempty"`
}

// ImageDownload has clients download url in full at once and measures the
// aggregate throughput. Every client must read exactly size bytes
// (size < 0: whatever Content-Length says).
func ImageDownload(ctx context.Context, client *http.Client, url string, clients int, size int64, timeout time.Duration) ImageResult {
	if client == nil {
		client = NewClient(clients)
	}
	res := ImageResult{URL: url, Clients: clients}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	slowest := time.Duration(0)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			n, err := download(ctx, client, url, timeout, size)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			res.Bytes += n
			if err != nil {
				res.Errors = append(res.Errors, err.Error())
			}
			if d > slowest {
				slowest = d
				if d > 0 {
					res.SlowestMBps = float64(n) / d.Seconds() / 1e6
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	res.Elapsed = Duration(el)
	if el > 0 {
		res.MBps = float64(res.Bytes) / el.Seconds() / 1e6
	}
	return res
}

func download(ctx context.Context, client *http.Client, url string, timeout time.Duration, size int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	if err != nil {
		return n, err
	}
	if size < 0 {
		size = resp.ContentLength
	}
	if size >= 0 && n != size {
		return n, fmt.Errorf("GET %s: read %d bytes, want %d", url, n, size)
	}
	return n, nil
}

// ResumeResult is a download cut mid-file and resumed with a Range
// request.
type ResumeResult struct {
	URL          string   `json:"url"`
	CutAt        int64    `json:"cut_at"`
	Size         int64    `json:"size"`
	Status       int      `json:"resume_status"`
	ContentRange string   `json:"content_range"`
	Identical    bool     `json:"identical"` // cut + resumed parts hash like a full download
	Elapsed      Duration `json:"elapsed"`
	Error        string   `json:"error,omitempty"`
}

// ResumeDownload reads the first half of url, drops the connection,
// resumes with Range: bytes=<half>- and compares the SHA-256 of the two
// parts with that of a full download.
func ResumeDownload(ctx context.Context, client *http.Client, url string, timeout time.Duration) (res ResumeResult) {
	if client == nil {
		client = NewClient(1)
	}
	res.URL = url
	start := time.Now()
	defer func() { res.Elapsed = Duration(time.Since(start)) }()
	fail := func(err error) ResumeResult {
		res.Error = err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	full := sha256.New()
	size, err := getInto(ctx, client, url, "", full, -1)
	if err != nil {
		return fail(err)
	}
	res.Size = size
	res.CutAt = size / 2

	parts := sha256.New()
	// The first half, then the connection is dropped mid-body, as when a
	// machine loses its link.
	if _, err := getInto(ctx, client, url, "", parts, res.CutAt); err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", res.CutAt))
	resp, err := client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.ContentRange = resp.Header.Get("Content-Range")
	if resp.StatusCode != http.StatusPartialContent {
		return fail(fmt.Errorf("resume: status %d, want 206", resp.StatusCode))
	}
	if want := fmt.Sprintf("bytes %d-%d/%d", res.CutAt, size-1, size); res.ContentRange != want {
		return fail(fmt.Errorf("resume: Content-Range %q, want %q", res.ContentRange, want))
	}
	if _, err := io.CopyBuffer(parts, resp.Body, make([]byte, 1<<20)); err != nil {
		return fail(err)
	}
	res.Identical = bytes.Equal(full.Sum(nil), parts.Sum(nil))
	if !res.Identical {
		return fail(fmt.Errorf("resume: the two parts differ from the full download"))
	}
	return res
}

// getInto copies url's body (at most limit bytes when limit >= 0) to w.
func getInto(ctx context.Context, client *http.Client, url, rng string, w io.Writer, limit int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	var r io.Reader = resp.Body
	if limit >= 0 {
		r = io.LimitReader(resp.Body, limit)
	}
	n, err := io.CopyBuffer(w, r, make([]byte, 1<<20))
	if err == nil && limit >= 0 && n != limit {
		err = fmt.Errorf("GET %s: short body %d < %d", url, n, limit)
	}
	return n, err
}
