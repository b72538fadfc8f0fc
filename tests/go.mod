module mayu/tests

go 1.26.0

require (
	github.com/stretchr/testify v1.12.1
	mayu/pkg v0.0.0-00010101000000-000000000000
)

require (
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace mayu/pkg => ../pkg
