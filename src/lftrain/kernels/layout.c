/* Moving attention's rows between the packed layout of the unpadded layers and the head-major grid of the
 * attention products, in one pass.
 *
 * The unpadded layers (models/unpad.py) compute queries, keys and values for the real tokens only, as rows of
 * heads x head-size values; attention multiplies per example and head, on a (batch, heads, width, head size)
 * grid. In PyTorch that move is a zero-fill, an index_copy and the layout copy the batched matmul makes of the
 * transposed view (and the context's way back a transpose, a copy and an index_select; backward the same
 * again). Here each is one pass of head-sized memcpys, for any element size.
 */
#include <stdint.h>
#include <string.h>

#define PARALLEL_MIN_BYTES (1 << 18)

/* rows (n x heads x head_bytes) -> grid (batch, heads, width, head_bytes); grid_row[b * width + w] is the row at
 * that position, or -1 for zeros */
void lft_rows_to_heads(const char *restrict rows, const int64_t *restrict grid_row, char *restrict grid,
                       int64_t batch, int64_t width, int64_t heads, int64_t head_bytes) {
    #pragma omp parallel for collapse(2) schedule(static) if (batch * width * heads * head_bytes >= PARALLEL_MIN_BYTES)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t h = 0; h < heads; h++) {
            char *out = grid + (b * heads + h) * width * head_bytes;
            for (int64_t w = 0; w < width; w++, out += head_bytes) {
                int64_t r = grid_row[b * width + w];
                if (r >= 0)
                    memcpy(out, rows + (r * heads + h) * head_bytes, (size_t)head_bytes);
                else
                    memset(out, 0, (size_t)head_bytes);
            }
        }
    }
}

/* grid (batch, heads, width, head_bytes) -> rows (n x heads x head_bytes); row r is grid position row_grid[r] */
void lft_heads_to_rows(const char *restrict grid, const int64_t *restrict row_grid, char *restrict rows, int64_t n,
                       int64_t width, int64_t heads, int64_t head_bytes) {
    #pragma omp parallel for schedule(static) if (n * heads * head_bytes >= PARALLEL_MIN_BYTES)
    for (int64_t r = 0; r < n; r++) {
        int64_t b = row_grid[r] / width, w = row_grid[r] % width;
        for (int64_t h = 0; h < heads; h++)
            memcpy(rows + (r * heads + h) * head_bytes, grid + ((b * heads + h) * width + w) * head_bytes,
                   (size_t)head_bytes);
    }
}
