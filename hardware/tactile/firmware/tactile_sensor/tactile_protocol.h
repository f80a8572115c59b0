/* Tactile serial protocol v1 (hardware/tactile/PROTOCOL.md): frame encoding, command decoding, CRC-32.
 *
 * Plain C99 with no Arduino dependency, so the host test suite compiles this very file and checks
 * its bytes against the Python encoder (tests/test_tactile_protocol.py). Byte order is written
 * explicitly (little endian on the wire), independent of the MCU's own endianness.
 */
#ifndef TACTILE_PROTOCOL_H
#define TACTILE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define TACTILE_MAGIC0 0xA5
#define TACTILE_MAGIC1 0x5A
#define TACTILE_VERSION 0x01
#define TACTILE_TYPE_FRAME 0x01
#define TACTILE_CMD_START 0x10
#define TACTILE_CMD_STOP 0x11
#define TACTILE_CMD_SET_RATE 0x12
#define TACTILE_HEADER_SIZE 12
#define TACTILE_CRC_SIZE 4
#define TACTILE_COMMAND_SIZE 12
#define TACTILE_MAX_DIM 64
#define TACTILE_FRAME_SIZE(rows, cols) (TACTILE_HEADER_SIZE + 2u * (rows) * (cols) + TACTILE_CRC_SIZE)

/* CRC-32/ISO-HDLC (zlib): poly 0xEDB88320 reflected, init and final XOR 0xFFFFFFFF.
 * crc32("123456789") == 0xCBF43926. Bitwise: ~8 cycles/bit, 48-byte frame ~ 3 us at 133 MHz. */
static inline uint32_t tactile_crc32(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static inline void tactile_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFF);
    p[1] = (uint8_t)(v >> 8);
}

static inline void tactile_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t tactile_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Write one frame into `out` (TACTILE_FRAME_SIZE(rows, cols) bytes); returns its size, 0 if the grid is invalid.
 * `values` is row-major: values[r * cols + c]. */
static inline size_t tactile_encode_frame(uint8_t *out, uint16_t seq, uint32_t t_us, uint8_t rows, uint8_t cols,
                                          const uint16_t *values) {
    if (rows < 1 || rows > TACTILE_MAX_DIM || cols < 1 || cols > TACTILE_MAX_DIM) return 0;
    size_t n = (size_t)rows * cols;
    out[0] = TACTILE_MAGIC0;
    out[1] = TACTILE_MAGIC1;
    out[2] = TACTILE_VERSION;
    out[3] = TACTILE_TYPE_FRAME;
    tactile_put_u16(out + 4, seq);
    tactile_put_u32(out + 6, t_us);
    out[10] = rows;
    out[11] = cols;
    for (size_t i = 0; i < n; i++) tactile_put_u16(out + TACTILE_HEADER_SIZE + 2 * i, values[i]);
    size_t end = TACTILE_HEADER_SIZE + 2 * n;
    tactile_put_u32(out + end, tactile_crc32(out + 2, end - 2));
    return end + TACTILE_CRC_SIZE;
}

/* Decode a 12-byte command packet starting at p; returns 1 and fills cmd/arg if marker, version and CRC match. */
static inline int tactile_decode_command(const uint8_t *p, uint8_t *cmd, uint32_t *arg) {
    if (p[0] != TACTILE_MAGIC0 || p[1] != TACTILE_MAGIC1 || p[2] != TACTILE_VERSION) return 0;
    if (tactile_get_u32(p + 8) != tactile_crc32(p + 2, 6)) return 0;
    *cmd = p[3];
    *arg = tactile_get_u32(p + 4);
    return 1;
}

#endif /* TACTILE_PROTOCOL_H */
