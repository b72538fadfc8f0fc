package storm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"time"

	"mayu/pkg/config"
)

// HostView is the part of a host record the checks read from
// GET /admin/hosts.
type HostView struct {
	Serial       string
	State        json.RawMessage
	InternalAddr string
	Profile      string
	MacAddresses []string
}

// StateName decodes State: a name, or the integer of the oldest Mayu
// releases.
func (h HostView) StateName() string {
	var s string
	if json.Unmarshal(h.State, &s) == nil {
		return s
	}
	var n int
	if json.Unmarshal(h.State, &n) == nil {
		return [...]string{"unknown", "configured", "installing", "running"}[min(max(n, 0), 3)]
	}
	return string(h.State)
}

// CheckConfig says what the end state must be.
type CheckConfig struct {
	BaseURL string
	Client  *http.Client
	// Serials are the storm's machines: each must be running.
	Serials []string
	// Cluster, when set, gives the profile quantities to check.
	Cluster *config.Config
	// ClusterDir, when set, is the cluster directory whose git log must
	// hold every audit message of every storm machine.
	ClusterDir string
	// WantState is the state every storm machine must be in ("running").
	WantState string
}

// Check is the end-state report.
type Check struct {
	Hosts          int            `json:"hosts"`
	NotInWantState int            `json:"not_in_want_state"`
	Missing        int            `json:"missing"`
	DuplicateAddrs int            `json:"duplicate_addrs"`
	Profiles       map[string]int `json:"profiles"`
	ProfilesWant   map[string]int `json:"profiles_want,omitempty"`
	Commits        int            `json:"commits,omitempty"`
	MissingAudit   int            `json:"missing_audit_messages,omitempty"`
	// Problems lists the failures (at most 20 examples per kind).
	Problems []string `json:"problems,omitempty"`
}

// OK tells whether the end state is right.
func (c *Check) OK() bool { return len(c.Problems) == 0 }

// AuditMessages are the commit messages every storm machine must leave,
// without the "<serial>: " prefix (MAYU-SPEC section 6).
var AuditMessages = []string{
	"host created", "updated with predefined settings", "updated host InternalAddr",
	"updated host profile and metadata", "set default etcd discovery token",
	"collected host mac addresses", "updated host connected nic", "updated host ipmi address",
	"updated host state to installing", "updated state to installed", "updated state to running",
}

// StepAudit are the audit messages each life-cycle step leaves.
var StepAudit = map[string][]string{
	RouteFirstStage:   AuditMessages[0:5],
	RouteFinalConfig:  AuditMessages[5:9],
	RouteSetInstalled: AuditMessages[9:10],
	RouteBootComplete: AuditMessages[10:11],
}

// StepState is the state a machine is in after each step.
var StepState = map[string]string{
	RouteFirstStage: "configured", RouteFinalConfig: "installing",
	RouteSetInstalled: "installed", RouteBootComplete: "running",
}

// FetchHosts lists the hosts over HTTP.
func FetchHosts(ctx context.Context, client *http.Client, base string) ([]HostView, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/admin/hosts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("storm: list hosts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("storm: list hosts: status %d", resp.StatusCode)
	}
	var hosts []HostView
	if err := json.NewDecoder(&limitedReader{r: resp.Body, n: maxBody}).Decode(&hosts); err != nil {
		return nil, fmt.Errorf("storm: list hosts: %w", err)
	}
	return hosts, nil
}

// GitSubjects returns every line of every commit message in dir (git
// CLI), and the number of commits. Lines rather than subjects: the spec
// lets a store group one request's changes into fewer commits as long as
// every audit message still appears in the log.
func GitSubjects(ctx context.Context, dir string) (map[string]bool, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// Each message ends with a NUL, so commits can be counted.
	cmd := exec.CommandContext(ctx, "git", "-C", dir, "log", "--format=%B%x00")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("storm: git log: %w", err)
	}
	lines := map[string]bool{}
	n := 0
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "\x00") {
			n++
			line = strings.ReplaceAll(line, "\x00", "")
		}
		if line = strings.TrimSpace(line); line != "" {
			lines[line] = true
		}
	}
	if err := cmd.Wait(); err != nil {
		return nil, 0, fmt.Errorf("storm: git log in %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	return lines, n, nil
}

// ExpectedProfiles is how many hosts each profile must have once total
// hosts registered: profiles fill up in config order, the rest is default.
func ExpectedProfiles(cfg *config.Config, total int) map[string]int {
	want := map[string]int{}
	left := total
	for _, p := range cfg.Profiles {
		if p.Name == config.DefaultProfileName {
			continue
		}
		n := min(p.Quantity, left)
		want[p.Name] = n
		left -= n
	}
	want[config.DefaultProfileName] = left
	return want
}

// CheckEndState verifies what a storm left: every storm machine in the
// wanted state, no address held twice, profile quantities exact, and every
// audit message in git log.
func CheckEndState(ctx context.Context, cc CheckConfig) (*Check, error) {
	if cc.WantState == "" {
		cc.WantState = "running"
	}
	hosts, err := FetchHosts(ctx, cc.Client, cc.BaseURL)
	if err != nil {
		return nil, err
	}
	c := &Check{Hosts: len(hosts), Profiles: map[string]int{}}
	problems := map[string][]string{}
	add := func(kind, ex string) { problems[kind] = append(problems[kind], ex) }

	bySerial := make(map[string]HostView, len(hosts))
	addrs := map[string]string{}
	for _, h := range hosts {
		bySerial[h.Serial] = h
		c.Profiles[h.Profile]++
		if h.InternalAddr == "" {
			continue
		}
		if other, dup := addrs[h.InternalAddr]; dup {
			c.DuplicateAddrs++
			add("address held by two hosts", fmt.Sprintf("%s: %s and %s", h.InternalAddr, other, h.Serial))
		}
		addrs[h.InternalAddr] = h.Serial
	}
	for _, s := range cc.Serials {
		h, ok := bySerial[s]
		switch {
		case !ok:
			c.Missing++
			add("storm machine missing", s)
		case h.StateName() != cc.WantState:
			c.NotInWantState++
			add("storm machine not "+cc.WantState, s+" is "+h.StateName())
		case h.InternalAddr == "":
			add("storm machine without InternalAddr", s)
		}
	}
	if cc.Cluster != nil {
		c.ProfilesWant = ExpectedProfiles(cc.Cluster, len(hosts))
		for name, n := range c.ProfilesWant {
			if c.Profiles[name] != n {
				add("profile quantity", fmt.Sprintf("%s has %d hosts, want %d", name, c.Profiles[name], n))
			}
		}
		for name, n := range c.Profiles {
			if _, ok := c.ProfilesWant[name]; !ok {
				add("profile quantity", fmt.Sprintf("%s (not in the config) has %d hosts", name, n))
			}
		}
	}
	if cc.ClusterDir != "" {
		subjects, n, err := GitSubjects(ctx, cc.ClusterDir)
		if err != nil {
			return nil, err
		}
		c.Commits = n
		for _, s := range cc.Serials {
			for _, m := range AuditMessages {
				if !subjects[s+": "+m] {
					c.MissingAudit++
					add("audit message missing from git log", s+": "+m)
				}
			}
		}
	}
	kinds := make([]string, 0, len(problems))
	for k := range problems {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		ex := problems[k]
		more := ""
		if len(ex) > 20 {
			more = fmt.Sprintf(" (and %d more)", len(ex)-20)
			ex = ex[:20]
		}
		c.Problems = append(c.Problems, fmt.Sprintf("%s: %d: %s%s", k, len(problems[k]), strings.Join(ex, "; "), more))
	}
	return c, nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
