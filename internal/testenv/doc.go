// Package testenv gives tests the real backing services Domicile runs on in
// production: a PostgreSQL schema of their own and a Redis key prefix of
// their own, each removed again by t.Cleanup.
//
// A developer without PostgreSQL or Redis gets a loud skip; with CI=true the
// same situation fails the test, so CI can never pass by skipping the
// backends the code is meant to be tested against.
//
// Defaults are the local services (postgres://postgres@127.0.0.1:5432/test and
// 127.0.0.1:6379); DOMICILE_TEST_POSTGRES and DOMICILE_TEST_REDIS override them.
package testenv
