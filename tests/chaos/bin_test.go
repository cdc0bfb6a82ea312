package chaos

// emberfsBin is the emberfs binary the chaos cluster runs, built by
// TestMain in chaos_test.go (build tag "chaos"); the checker's tests in the
// default run do not start processes.
var emberfsBin string
