// Package router names every topic and consumer group Switchboard uses: the
// public contract for a program that is not written with the engine (a
// producer in another language, a broker's access-control rules) and must
// publish to a command or event, or subscribe to one, by name.
//
//	command   <service>.v<version>.<command>     CommandTopic
//	event     event.<name>                      EventTopic
//	group     <service>.v<version>[.<name>]     EventGroup (one per subscribing service)
//	reply     reply.<instance>                  ReplyTopic
//
// Names are ASCII, dot separated, and never contain a caller's free text
// unchecked: ValidName, ValidVersion, ValidEventName and ValidReplyTopic
// say what is accepted. The metadata a message carries is listed in the
// README ("Metadata that flows").
//
// The machinery that turns registrations into Watermill handlers and
// carries replies is internal to the engine (engine/internal/dispatch).
package router
