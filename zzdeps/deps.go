package zzdeps

import (
	_ "github.com/beevik/ntp"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/gorilla/websocket"
	_ "github.com/jonboulle/clockwork"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/mochi-mqtt/server/v2/hooks/auth"
	_ "github.com/mochi-mqtt/server/v2/listeners"
	_ "github.com/pelletier/go-toml/v2"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sys/unix"
	_ "periph.io/x/conn/v3/gpio/gpiotest"
	_ "periph.io/x/conn/v3/i2c/i2ctest"
	_ "periph.io/x/devices/v3/bmxx80"
	_ "periph.io/x/devices/v3/aht20"
	_ "periph.io/x/devices/v3/mcp9808"
	_ "periph.io/x/devices/v3/ina219"
	_ "periph.io/x/devices/v3/ads1x15"
	_ "periph.io/x/host/v3"
)
