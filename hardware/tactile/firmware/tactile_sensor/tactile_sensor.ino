// Reference firmware: resistive taxel matrix -> tactile protocol v1 frames (hardware/tactile/PROTOCOL.md).
//
// Board: Raspberry Pi Pico (RP2040, arduino-pico core) or Teensy 4.x (Teensyduino); see README.md for
// wiring and build. One row is driven high at a time (the others are held low so current through
// pressed taxels of other rows drains to ground instead of ghosting into the read column); each
// column is read through a CD74HC4067 analog mux into one 12-bit ADC input, across a pull-down
// resistor, so a pressed taxel (lower resistance) reads higher.
//
// Timing: scans start on a fixed schedule (default 1000 Hz); t_us is micros() at the scan start.
// A frame that does not fit in the USB/UART transmit buffer is dropped, never waited for, so the
// schedule holds and the host sees a sequence gap.

#include <Arduino.h>

#include "tactile_protocol.h"

// ---- configuration (match the profile's tactile entry: rows, cols, rate_hz, baud) -------------
#define ROWS 4
#define COLS 4
#define DEFAULT_RATE_HZ 1000
#define MAX_RATE_HZ 4000
#define BAUD 2000000            // UART links only; USB CDC ignores it
#define ROW_SETTLE_US 20        // after switching the driven row (matrix + cable capacitance)
#define MUX_SETTLE_US 3         // after switching the mux channel (ADC sample capacitor recharge)
#define ADC_BITS 12

#if defined(ARDUINO_ARCH_RP2040)
static const uint8_t ROW_PINS[ROWS] = {2, 3, 4, 5};     // GP2..GP5 -> row electrodes (via 100 ohm)
static const uint8_t MUX_SEL_PINS[4] = {10, 11, 12, 13}; // GP10..GP13 -> CD74HC4067 S0..S3
static const uint8_t ADC_PIN = 26;                       // GP26 / ADC0 <- mux SIG
#else  // Teensy 4.x
static const uint8_t ROW_PINS[ROWS] = {2, 3, 4, 5};
static const uint8_t MUX_SEL_PINS[4] = {6, 7, 8, 9};
static const uint8_t ADC_PIN = A0;                       // pin 14
#endif
static const uint8_t COL_MUX_CHANNEL[COLS] = {0, 1, 2, 3}; // mux input wired to each column

#define LINK Serial             // USB CDC; use Serial1 (+ Serial1.begin(BAUD)) for a UART link

static uint16_t values[ROWS * COLS];
static uint8_t frame[TACTILE_FRAME_SIZE(ROWS, COLS)];
static uint8_t cmd_buf[2 * TACTILE_COMMAND_SIZE];
static size_t cmd_len = 0;
static uint16_t seq = 0;
static uint32_t period_us = 1000000UL / DEFAULT_RATE_HZ;
static uint32_t next_us = 0;
static bool streaming = true;  // stream from power-up; START/STOP commands toggle

static inline void select_mux(uint8_t channel) {
  for (uint8_t b = 0; b < 4; b++) digitalWrite(MUX_SEL_PINS[b], (channel >> b) & 1);
}

static void scan(void) {
  for (uint8_t r = 0; r < ROWS; r++) {
    for (uint8_t i = 0; i < ROWS; i++) digitalWrite(ROW_PINS[i], i == r ? HIGH : LOW);
    delayMicroseconds(ROW_SETTLE_US);
    for (uint8_t c = 0; c < COLS; c++) {
      select_mux(COL_MUX_CHANNEL[c]);
      delayMicroseconds(MUX_SETTLE_US);
      values[r * COLS + c] = (uint16_t)analogRead(ADC_PIN);  // 0..4095
    }
  }
  for (uint8_t i = 0; i < ROWS; i++) digitalWrite(ROW_PINS[i], LOW);  // no standing current between scans
}

static void handle_command(uint8_t cmd, uint32_t arg) {
  if (cmd == TACTILE_CMD_START) {
    streaming = true;
    next_us = micros();
  } else if (cmd == TACTILE_CMD_STOP) {
    streaming = false;
  } else if (cmd == TACTILE_CMD_SET_RATE && arg >= 1) {
    period_us = 1000000UL / (arg > MAX_RATE_HZ ? MAX_RATE_HZ : arg);
  }
}

// Collect host bytes; act on every valid 12-byte command, skip everything else.
static void poll_commands(void) {
  while (LINK.available() > 0) {
    uint8_t b = (uint8_t)LINK.read();
    if (cmd_len == 0 && b != TACTILE_MAGIC0) continue;
    cmd_buf[cmd_len++] = b;
    if (cmd_len == 2 && b != TACTILE_MAGIC1) {
      cmd_len = (b == TACTILE_MAGIC0) ? 1 : 0;
      if (cmd_len) cmd_buf[0] = b;
      continue;
    }
    if (cmd_len == TACTILE_COMMAND_SIZE) {
      uint8_t cmd;
      uint32_t arg;
      if (tactile_decode_command(cmd_buf, &cmd, &arg)) handle_command(cmd, arg);
      cmd_len = 0;  // a corrupted command is dropped; the host re-sends START when frames stop
    }
  }
}

void setup() {
  for (uint8_t i = 0; i < ROWS; i++) {
    pinMode(ROW_PINS[i], OUTPUT);
    digitalWrite(ROW_PINS[i], LOW);
  }
  for (uint8_t b = 0; b < 4; b++) pinMode(MUX_SEL_PINS[b], OUTPUT);
  analogReadResolution(ADC_BITS);
  LINK.begin(BAUD);
  next_us = micros();
}

void loop() {
  poll_commands();
  if (!streaming) return;
  if ((int32_t)(micros() - next_us) < 0) return;  // not due yet (wrap-safe comparison)
  uint32_t t_us = micros();
  if ((int32_t)(t_us - next_us) > (int32_t)period_us) next_us = t_us;  // fell behind: re-anchor, don't burst
  next_us += period_us;
  scan();
  size_t n = tactile_encode_frame(frame, seq, t_us, ROWS, COLS, values);
  seq++;  // counts scans, so a dropped frame shows up as a gap on the host
  if ((size_t)LINK.availableForWrite() >= n) LINK.write(frame, n);
}
