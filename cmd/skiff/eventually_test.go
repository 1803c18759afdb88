package main

import (
	"skiff.dev/skiff/control/api/apitest"
)

// eventually is the shared wait of the tests that speak the API.
var eventually = apitest.Eventually
