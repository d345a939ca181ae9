// Fixed-argument wrappers over the parts of libvips GenGate uses. libvips' own C API takes its
// options as NULL-terminated variadic lists, which Swift cannot call; these take them as plain
// arguments. Every function returns 0 on success and -1 on failure, with the reason left for
// gg_vips_error.
#ifndef GENGATE_VIPS_H
#define GENGATE_VIPS_H

#include <stddef.h>

typedef struct _VipsImage gg_image;

/// Starts libvips once per process: `threads` worker threads per image operation, and no
/// operation cache (a cache would keep decoded images alive past their job).
int gg_vips_start(int threads);

/// What a file's header says, without decoding its pixels. Width and height are as stored;
/// `orientation` is the EXIF orientation (1 when absent).
typedef struct {
    int width;
    int height;
    int bands;
    int pages;
    int orientation;
    int has_alpha;
} gg_header;

int gg_vips_header(const char *path, gg_header *out);

/// Decodes every pixel of the file, streaming (a row strip at a time), and fails on a truncated
/// or corrupt file rather than filling in grey.
int gg_vips_decode_check(const char *path);

/// Resize modes.
enum {
    GG_RESIZE_NONE = 0,
    GG_RESIZE_FIT = 1,      // within width x height, keeping the aspect ratio, never enlarged
    GG_RESIZE_FILL = 2,     // exactly width x height, stretched
    GG_RESIZE_COVER = 3,    // exactly width x height, scaled to cover it and cropped at the centre
    GG_RESIZE_CONTAIN = 4,  // exactly width x height, scaled to fit inside it and padded
};

/// Output formats.
enum { GG_FORMAT_JPEG = 1, GG_FORMAT_PNG = 2, GG_FORMAT_WEBP = 3 };

/// Loads the first frame of `path`, applies its EXIF orientation, converts it to 8-bit sRGB,
/// resizes it (`mode`; a width or height of 0 means "no bound"), sharpens and stretches its
/// contrast when asked, flattens any alpha onto white when `flatten`, and holds the result in
/// memory (so it can be encoded several times). Fails on a truncated or corrupt file.
int gg_vips_prepare(
    const char *path, int mode, int width, int height, int sharpen, int auto_contrast, int flatten,
    gg_image **out);

/// Scales an image by `scale` (below 1 to shrink), in memory.
int gg_vips_scale(gg_image *in, double scale, gg_image **out);

int gg_vips_width(gg_image *image);
int gg_vips_height(gg_image *image);

/// Encodes without metadata (EXIF, XMP, ICC dropped): JPEG and WebP at `quality` (1-100); PNG
/// losslessly. The buffer is freed with gg_vips_free.
int gg_vips_encode(gg_image *image, int format, int quality, void **buffer, size_t *length);

void gg_vips_release(gg_image *image);
void gg_vips_free(void *buffer);

/// The last errors libvips reported (a copy the caller frees with gg_vips_free), cleared.
char *gg_vips_error(void);

#endif
