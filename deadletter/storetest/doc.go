// Package storetest is the conformance suite every deadletter.Store runs:
// the store contract (keys, versions, paging, filters, compare-and-delete,
// purge) and what Replay and ReplayAll build on it. It imports no bridge
// and no engine: replays publish to a recording publisher of its own. What
// needs a real handler failing again (replayed messages dead-lettered a
// second time) is tested next to the engine, in package engine's
// replay_test.go, with the same stores.
//
// Run runs these cases in this order, each a named subtest (the list is
// the table cases in storetest.go; a test keeps the two the same):
//
//   - GetRoundTrips
//   - PutIsIdempotentPerMessageAndGroup
//   - PutRefusesTheIDOfAnotherRecord
//   - KeyIncludesTheTopic
//   - ListFiltersAndPages
//   - ReplayGoesToTheFailedGroupAndRemovesTheRecord
//   - DeleteComparesTheVersion
//   - PurgeFilters
//   - ReplayKeepsAFailureWrittenBeforeTheDelete
//   - ReplayAllCounts
//
// so that one runs alone:
//
//	go test ./deadletter/pgstore -run 'TestConformance/PurgeFilters'
//
// Each case stores its own records, under a service name no other case or
// run uses, and purges them when it ends. ListAll and DeleteAll, which the
// cases use, serve tests of stores elsewhere too.
package storetest
