package host

// MachineTokenHeader is the HTTP header a machine's credential travels in
// (pkg/machineauth issues and checks it). It lives here, in the package
// every client already imports, so that mayuctl and the host-info helper
// send it without importing the daemon's packages.
const MachineTokenHeader = "Mayu-Machine-Token"
