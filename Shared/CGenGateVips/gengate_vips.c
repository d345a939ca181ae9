#include "gengate_vips.h"

#include <vips/vips.h>

int gg_vips_start(int threads) {
    // libvips' warnings (a truncated file's "error in tile") go to stderr unless this is set;
    // GenGate reports what matters through its own errors.
    g_setenv("VIPS_WARNING", "0", FALSE);
    if (VIPS_INIT("gengate")) return -1;
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    if (threads > 0) vips_concurrency_set(threads);
    return 0;
}

int gg_vips_header(const char *path, gg_header *out) {
    VipsImage *image = vips_image_new_from_file(path, NULL);
    if (!image) return -1;
    out->width = vips_image_get_width(image);
    out->height = vips_image_get_height(image);
    out->bands = vips_image_get_bands(image);
    out->pages = vips_image_get_n_pages(image);
    out->orientation = vips_image_get_orientation(image);
    out->has_alpha = vips_image_hasalpha(image) ? 1 : 0;
    g_object_unref(image);
    return 0;
}

int gg_vips_decode_check(const char *path) {
    VipsImage *image = vips_image_new_from_file(
        path, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
    if (!image) return -1;
    double average = 0;
    int result = vips_avg(image, &average, NULL);
    g_object_unref(image);
    return result;
}

// Replaces *image by next (taking ownership), or fails leaving *image as it was.
static int step(VipsImage **image, int result, VipsImage *next) {
    if (result) return -1;
    g_object_unref(*image);
    *image = next;
    return 0;
}

// A linear stretch of the 1st..99th percentile of the image's mean brightness onto 0..255,
// applied to the colour bands (alpha left alone).
static int stretch_contrast(VipsImage **image) {
    VipsImage *in = *image;
    int alpha = vips_image_hasalpha(in);
    int colour_bands = vips_image_get_bands(in) - (alpha ? 1 : 0);
    VipsImage *colour = NULL, *mean = NULL, *stretched = NULL, *cast = NULL, *alpha_band = NULL, *joined = NULL;
    int low = 0, high = 255, failed = -1;
    if (vips_extract_band(in, &colour, 0, "n", colour_bands, NULL)) goto done;
    if (vips_bandmean(colour, &mean, NULL)) goto done;
    if (vips_percent(mean, 1, &low, NULL) || vips_percent(mean, 99, &high, NULL)) goto done;
    if (high - low < 2) {  // flat already: nothing to stretch
        failed = 0;
        goto done;
    }
    double a = 255.0 / (high - low);
    if (vips_linear1(colour, &stretched, a, -low * a, NULL)) goto done;
    if (vips_cast(stretched, &cast, VIPS_FORMAT_UCHAR, NULL)) goto done;
    if (alpha) {
        if (vips_extract_band(in, &alpha_band, colour_bands, NULL)) goto done;
        if (vips_bandjoin2(cast, alpha_band, &joined, NULL)) goto done;
        failed = step(image, 0, joined);
        joined = NULL;
    } else {
        failed = step(image, 0, cast);
        cast = NULL;
    }
done:
    if (colour) g_object_unref(colour);
    if (mean) g_object_unref(mean);
    if (stretched) g_object_unref(stretched);
    if (cast) g_object_unref(cast);
    if (alpha_band) g_object_unref(alpha_band);
    if (joined) g_object_unref(joined);
    return failed;
}

int gg_vips_prepare(
    const char *path, int mode, int width, int height, int sharpen, int auto_contrast, int flatten,
    gg_image **out) {
    // vips_thumbnail loads with shrink-on-load where the format allows (JPEG, WebP), applies
    // the EXIF orientation and imports to sRGB. With no resize, the bound is the image itself.
    int bound_width = width > 0 ? width : VIPS_MAX_COORD;
    int bound_height = height > 0 ? height : VIPS_MAX_COORD;
    VipsSize size = VIPS_SIZE_DOWN;
    VipsInteresting crop = VIPS_INTERESTING_NONE;
    switch (mode) {
    case GG_RESIZE_FILL: size = VIPS_SIZE_FORCE; break;
    case GG_RESIZE_COVER: size = VIPS_SIZE_BOTH; crop = VIPS_INTERESTING_CENTRE; break;
    case GG_RESIZE_CONTAIN: size = VIPS_SIZE_BOTH; break;
    default: break;
    }
    VipsImage *image = NULL, *next = NULL;
    // The loader's options go in brackets after the name: fail on a truncated or corrupt file.
    char *name = g_strdup_printf("%s[fail_on=error]", path);
    int loaded = vips_thumbnail(name, &image, bound_width, "height", bound_height, "size", size, "crop", crop, NULL);
    g_free(name);
    if (loaded) return -1;
    if (vips_image_get_interpretation(image) != VIPS_INTERPRETATION_sRGB &&
        vips_image_get_interpretation(image) != VIPS_INTERPRETATION_B_W) {
        if (step(&image, vips_colourspace(image, &next, VIPS_INTERPRETATION_sRGB, NULL), next)) goto failed;
    }
    if (vips_image_get_format(image) != VIPS_FORMAT_UCHAR) {
        // 16-bit PNGs and float results: down to 8 bits per band.
        if (vips_image_get_interpretation(image) == VIPS_INTERPRETATION_RGB16 ||
            vips_image_get_interpretation(image) == VIPS_INTERPRETATION_GREY16) {
            if (step(&image, vips_colourspace(image, &next, VIPS_INTERPRETATION_sRGB, NULL), next)) goto failed;
        }
        if (vips_image_get_format(image) != VIPS_FORMAT_UCHAR &&
            step(&image, vips_cast(image, &next, VIPS_FORMAT_UCHAR, NULL), next))
            goto failed;
    }
    if (mode == GG_RESIZE_CONTAIN && width > 0 && height > 0) {
        if (step(&image, vips_gravity(image, &next, VIPS_COMPASS_DIRECTION_CENTRE, width, height,
                                      "extend", VIPS_EXTEND_BACKGROUND, NULL), next))
            goto failed;
    }
    if (flatten && vips_image_hasalpha(image)) {
        VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
        int result = vips_flatten(image, &next, "background", white, NULL);
        vips_area_unref(VIPS_AREA(white));
        if (step(&image, result, next)) goto failed;
    }
    if (auto_contrast) {
        // The stretch reads the image twice (its percentiles, then each pixel): decode it once.
        next = vips_image_copy_memory(image);
        if (step(&image, next ? 0 : -1, next)) goto failed;
        if (stretch_contrast(&image)) goto failed;
    }
    if (sharpen) {
        if (step(&image, vips_sharpen(image, &next, NULL), next)) goto failed;
        if (vips_image_get_format(image) != VIPS_FORMAT_UCHAR &&
            step(&image, vips_cast(image, &next, VIPS_FORMAT_UCHAR, NULL), next))
            goto failed;
    }
    // Decode and process once, here; encodes read the result from memory.
    next = vips_image_copy_memory(image);
    if (!next) goto failed;
    g_object_unref(image);
    *out = next;
    return 0;
failed:
    g_object_unref(image);
    return -1;
}

int gg_vips_scale(gg_image *in, double scale, gg_image **out) {
    VipsImage *resized = NULL;
    if (vips_resize(in, &resized, scale, NULL)) return -1;
    VipsImage *copy = vips_image_copy_memory(resized);
    g_object_unref(resized);
    if (!copy) return -1;
    *out = copy;
    return 0;
}

int gg_vips_width(gg_image *image) { return vips_image_get_width(image); }
int gg_vips_height(gg_image *image) { return vips_image_get_height(image); }

int gg_vips_encode(gg_image *image, int format, int quality, void **buffer, size_t *length) {
    switch (format) {
    case GG_FORMAT_JPEG:
        return vips_jpegsave_buffer(image, buffer, length, "Q", quality, "strip", TRUE, "optimize_coding", TRUE,
                                    NULL);
    case GG_FORMAT_PNG:
        return vips_pngsave_buffer(image, buffer, length, "strip", TRUE, "compression", 6, NULL);
    case GG_FORMAT_WEBP:
        return vips_webpsave_buffer(image, buffer, length, "Q", quality, "strip", TRUE, NULL);
    default:
        vips_error("gengate", "unknown output format %d", format);
        return -1;
    }
}

void gg_vips_release(gg_image *image) {
    if (image) g_object_unref(image);
}

void gg_vips_free(void *buffer) { g_free(buffer); }

char *gg_vips_error(void) { return vips_error_buffer_copy(); }
