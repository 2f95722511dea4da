// Package services holds the example services of the seed's scenario, used
// unchanged by every deployment model under examples/: the user service's
// createUser calls the email service's sendWelcome and, on success, emits
// user.created, which the email service also consumes.
//
// Each service has an api package with its contracts (what callers import)
// and an implementation package (what only the process running the service
// imports). No service imports another's implementation.
package services
