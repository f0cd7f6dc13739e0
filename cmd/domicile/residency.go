package main

import (
	"errors"
	"io"
)

// runResidency is being written (issue 5).
func runResidency(args []string, stdout, stderr io.Writer) error {
	return usageError{errors.New("residency: not implemented yet")}
}
