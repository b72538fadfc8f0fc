package discovery

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// The etcd v2 keys wire format, as far as the discovery protocol uses it.
// Field names, omissions and status codes are those of etcd 3.4 with
// --enable-v2 (compared side by side in the tests).

// Node is an etcd v2 node: a key with a value, or a directory with nodes.
type Node struct {
	Key           string  `json:"key"`
	Value         *string `json:"value,omitempty"`
	Dir           bool    `json:"dir,omitempty"`
	Nodes         []*Node `json:"nodes,omitempty"`
	ModifiedIndex uint64  `json:"modifiedIndex"`
	CreatedIndex  uint64  `json:"createdIndex"`
}

// Response is the body of a successful keys request, and of a watch event.
type Response struct {
	Action   string `json:"action"`
	Node     *Node  `json:"node"`
	PrevNode *Node  `json:"prevNode,omitempty"`
}

// Error is etcd's error body. The client decides what to do from the HTTP
// status and errorCode (105 on a duplicate member id, 100 on an unknown
// token), so both follow etcd exactly.
type Error struct {
	Code    int    `json:"errorCode"`
	Message string `json:"message"`
	Cause   string `json:"cause,omitempty"`
	Index   uint64 `json:"index"`
}

func (e *Error) Error() string {
	return "discovery: etcd error " + strconv.Itoa(e.Code) + ": " + e.Message + " (" + e.Cause + ")"
}

// etcd v2 error codes used here.
const (
	codeKeyNotFound  = 100
	codeTestFailed   = 101
	codeNotFile      = 102
	codeNotDir       = 104
	codeNodeExist    = 105
	codeInvalidField = 209
	codeIndexNaN     = 203
	codeRaftInternal = 300
	codeIndexCleared = 401
)

var codeMessages = map[int]string{
	codeKeyNotFound:  "Key not found",
	codeTestFailed:   "Compare failed",
	codeNotFile:      "Not a file",
	codeNotDir:       "Not a directory",
	codeNodeExist:    "Key already exists",
	codeIndexNaN:     "The given index in POST form is not a number",
	codeInvalidField: "Invalid field",
	codeRaftInternal: "Raft Internal Error",
	codeIndexCleared: "The event in requested index is outdated and cleared",
}

func newError(code int, cause string, index uint64) *Error {
	return &Error{Code: code, Message: codeMessages[code], Cause: cause, Index: index}
}

// status maps an error code to the HTTP status etcd answers it with.
func (e *Error) status() int {
	switch {
	case e.Code == codeKeyNotFound:
		return http.StatusNotFound
	case e.Code == codeTestFailed || e.Code == codeNodeExist:
		return http.StatusPreconditionFailed
	case e.Code == codeNotFile || e.Code == codeNotDir:
		return http.StatusForbidden
	case e.Code >= 200 && e.Code < 300, e.Code == codeIndexCleared:
		return http.StatusBadRequest
	default:
		// 5xx makes etcd's client retry with backoff rather than give up.
		return http.StatusInternalServerError
	}
}

func writeJSON(c echo.Context, status int, index uint64, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set("X-Etcd-Index", strconv.FormatUint(index, 10))
	return c.Blob(status, echo.MIMEApplicationJSON, append(body, '\n'))
}

func writeError(c echo.Context, e *Error) error {
	return writeJSON(c, e.status(), e.Index, e)
}

func strPtr(s string) *string { return &s }
