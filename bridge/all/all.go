package all

import (
	_ "github.com/switchboard-go/switchboard/bridge/amqp"     // amqp://, amqps://
	_ "github.com/switchboard-go/switchboard/bridge/inproc"   // gochannel://
	_ "github.com/switchboard-go/switchboard/bridge/mqtt"     // mqtt://, mqtts://
	_ "github.com/switchboard-go/switchboard/bridge/nats"     // nats://
	_ "github.com/switchboard-go/switchboard/bridge/postgres" // postgres://, postgresql://
)
