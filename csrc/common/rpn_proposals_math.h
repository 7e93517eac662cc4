#pragma once
// The per-candidate arithmetic of the fused RPN proposal op (rpn_proposals), shared by the CPU
// and the CUDA kernels.
//
// A candidate is one of the pre_nms_top_n highest objectness logits of an (image, level). Its
// anchor is computed on the fly from (level, y, x, a) with grid_anchors' roundings, its deltas are
// decoded with BoxCoder(weights=(1, 1, 1, 1)) and clipped to the image (box_coder_math.h), and it
// survives the filters when both sides are >= min_size and sigmoid(logit) >= score_thresh, as
// torchvision's filter_proposals tests them (in the input dtype). A NaN anywhere fails a test.
#include "common/anchors_math.h"
#include "common/box_coder_math.h"
#include "common/macros.h"

namespace maskrcnn_fast {

// Where the levels sit: objectness [N, A, H, W] and deltas [N, 4A, H, W] per level, candidates
// of level l at [cand_begin, cand_begin + k) of each image's list.
struct RpnLevel {
  int64_t height, width, num_anchors;  // H, W, A
  int64_t stride_h, stride_w;
  int64_t k;           // min(pre_nms_top_n, A * H * W)
  int64_t cand_begin;  // first candidate of this level in an image's candidate list
};

struct RpnLayout {
  RpnLevel level[kMaxAnchorLevels];
  int num_levels;
  int64_t num_images;
  int64_t num_candidates;  // per image: sum of k over the levels
};

// The level of candidate j of an image (levels are few: a linear scan).
MF_HOST_DEVICE int rpn_level_of(const RpnLayout& layout, int64_t j) {
  int l = 0;
  while (l + 1 < layout.num_levels && j >= layout.level[l + 1].cand_begin) ++l;
  return l;
}

// Filter thresholds, rounded to the input dtype as torch rounds a Python scalar compared with a
// tensor of that dtype.
template <typename acc_t>
struct RpnFilter {
  acc_t min_size;
  acc_t score_thresh;
};

// BoxCoder(weights=(1, 1, 1, 1)), clipped to the image (h, w); the clamp bounds are rounded to
// the input dtype first, as torch.clamp rounds Python scalars. xform_clip: already rounded.
template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE DecodeParams<acc_t> rpn_decode_params(acc_t xform_clip, int64_t img_h,
                                                     int64_t img_w) {
  DecodeParams<acc_t> p;
  p.wx = p.wy = p.ww = p.wh = acc_t(1);
  p.xform_clip = xform_clip;
  p.clip = true;
  p.lo = acc_t(0);
  p.img_h = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(img_h)));
  p.img_w = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(img_w)));
  return p;
}

// torch.sigmoid: 1 / (1 + exp(-x)), in the op math type.
template <typename acc_t>
MF_BOX_INLINE acc_t rpn_sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + mf_exp(-x));
}

// Candidate `idx` of a level: idx = a * H * W + y * W + x indexes the level's objectness of
// one image as laid out in memory, [A, H, W]; deltas_img is the same image's [4A, H, W]
// (contiguous), cell its [A, 4] cell anchors. Writes the clipped box and the probability in the
// input dtype; returns whether the candidate passes the min-size and score filters. `p` holds the
// decode weights (1, 1, 1, 1), the xform clip and the image size.
template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE bool rpn_candidate(const RpnLevel& lv, const scalar_t* deltas_img,
                                  const scalar_t* cell, int64_t idx, scalar_t logit,
                                  const DecodeParams<acc_t>& p, const RpnFilter<acc_t>& f,
                                  scalar_t* box, scalar_t* prob) {
  const int64_t hw = lv.height * lv.width;
  const int64_t a = idx / hw;
  const int64_t yx = idx - a * hw;
  const int64_t y = yx / lv.width;
  const int64_t x = yx - y * lv.width;
  scalar_t anchor[4];
  write_anchor<scalar_t, acc_t>(cell + 4 * a, x * lv.stride_w, y * lv.stride_h, anchor);
  const BoxFrame<acc_t> frame =
      box_frame<acc_t>(static_cast<acc_t>(anchor[0]), static_cast<acc_t>(anchor[1]),
                       static_cast<acc_t>(anchor[2]), static_cast<acc_t>(anchor[3]));
  const scalar_t* d = deltas_img + 4 * a * hw + yx;
  acc_t r[4];
  decode_box<acc_t>(frame, static_cast<acc_t>(d[0]), static_cast<acc_t>(d[hw]),
                    static_cast<acc_t>(d[2 * hw]), static_cast<acc_t>(d[3 * hw]), p,
                    /*clip=*/true, r);
  for (int i = 0; i < 4; ++i) box[i] = static_cast<scalar_t>(r[i]);
  // remove_small_boxes subtracts the stored (input dtype) coordinates.
  const acc_t w = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(box[2]) -
                                                           static_cast<acc_t>(box[0])));
  const acc_t h = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(box[3]) -
                                                           static_cast<acc_t>(box[1])));
  const scalar_t pr = static_cast<scalar_t>(rpn_sigmoid<acc_t>(static_cast<acc_t>(logit)));
  *prob = pr;
  return w >= f.min_size && h >= f.min_size && static_cast<acc_t>(pr) >= f.score_thresh;
}

}  // namespace maskrcnn_fast
