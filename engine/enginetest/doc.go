// Package enginetest is a harness for unit-testing one service in a few
// lines: New runs the service on a private in-process bus and returns a
// Harness, through which a test invokes its commands, delivers events to
// its subscriptions and looks at the events it emitted; Stub stands in for
// the commands of other services it calls.
//
//	h := enginetest.New(t, user.New(store),
//		enginetest.Stub(emailapi.SendWelcome, func(ctx context.Context, in emailapi.SendWelcomeIn) (emailapi.SendWelcomeOut, error) {
//			return emailapi.SendWelcomeOut{MessageID: "m1"}, nil
//		}))
//	u, err := userapi.CreateUser.Invoke(h.Context(), userapi.CreateUserIn{Name: "Ada", Email: "ada@example.com"})
//	created := enginetest.Emitted(h, userapi.UserCreated) // []userapi.User
package enginetest
