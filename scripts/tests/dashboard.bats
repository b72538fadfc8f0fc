#!/usr/bin/env bats
#
# static_html/index.html: self-contained (its Content-Security-Policy admits
# only its own inline script and style, by hash) and rendering /admin/hosts
# like `mayuctl list`, every value as text. The checks live in
# fixtures/dashboard-test.js and run under node.

setup() {
  load helpers
  require_cmd node nodejs
}

@test "the dashboard renders hosts like mayuctl list, escapes everything and loads nothing from elsewhere" {
  run node "$FIXTURES/dashboard-test.js" "$REPO_DIR/static_html/index.html"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "dashboard ok" ]
}

@test "the dashboard test catches a page that parses HTML" {
  sed 's/el.textContent = text;/el.innerHTML = text;/' "$REPO_DIR/static_html/index.html" >"$BATS_TEST_TMPDIR/bad.html"
  run node "$FIXTURES/dashboard-test.js" "$BATS_TEST_TMPDIR/bad.html"
  [ "$status" -ne 0 ]
  [[ $output == *"no HTML parsing in the script"* ]]
}
