// Package mqtt is the MQTT v5 backend, registered for "mqtt://" URLs.
package mqtt
