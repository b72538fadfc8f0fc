package proctest

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// EtcdV2Create writes key (starting with "/") in the v2 keys API of the
// etcd at etcdURL the way Mayu 0.11 wrote a token's _config/size and etcd's
// discovery client writes a member: PUT ?prevExist=false with a form value.
// Anything but 201 Created fails the test.
func EtcdV2Create(t testing.TB, etcdURL, key, value string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, etcdURL+"/v2/keys"+key+"?prevExist=false",
		strings.NewReader(url.Values{"value": {value}}.Encode()))
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("proctest: PUT %s: %v", key, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("proctest: PUT %s answered %s: %s", key, resp.Status, body)
	}
}
