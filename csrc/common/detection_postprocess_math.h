#pragma once
// The per-ROI arithmetic of the fused box-head postprocess (detection_postprocess), shared by
// the CPU and the CUDA kernels: torchvision's RoIHeads.postprocess_detections up to the NMS.
//
// Softmax over the C class logits of a ROI in the op math type (max, then a sequential sum of
// exp(x - max), then exp(x - max) / sum, rounded once to the input dtype); a (ROI, class >= 1)
// is a candidate when its probability > score_thresh and its decoded, clipped box
// (box_coder_math.h, BoxCoder with the given weights) has both sides >= 1e-2, tested in the
// input dtype as torchvision tests them. NaN fails every test. Candidate q of an image is
// p * (C - 1) + (c - 1) for proposal p and class c, torchvision's flattening.
#include "common/box_coder_math.h"
#include "common/macros.h"

namespace maskrcnn_fast {

template <typename acc_t>
struct SoftmaxStats {
  acc_t max, sum;
};

template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE acc_t softmax_max(const scalar_t* row, int64_t C) {
  acc_t m = static_cast<acc_t>(row[0]);
  for (int64_t c = 1; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(row[c]);
    // NaN propagates to the max (then every probability is NaN), as in torch.softmax.
    m = (v > m || v != v) ? v : m;
  }
  return m;
}

// The sum is sequential in class order (CPU and CUDA add in the same order). The CPU kernel
// computes the same exps in a vectorised loop and the same sum from them.
template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE SoftmaxStats<acc_t> softmax_stats(const scalar_t* row, int64_t C) {
  SoftmaxStats<acc_t> s;
  s.max = softmax_max<scalar_t, acc_t>(row, C);
  s.sum = acc_t(0);
  for (int64_t c = 0; c < C; ++c) s.sum += mf_exp(static_cast<acc_t>(row[c]) - s.max);
  return s;
}

template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE scalar_t softmax_prob(scalar_t x, const SoftmaxStats<acc_t>& s) {
  return static_cast<scalar_t>(mf_exp(static_cast<acc_t>(x) - s.max) / s.sum);
}

// The decoded box of one class (codes: its 4 regression values) against the ROI's frame,
// clipped to the image in p; stored in the input dtype. True when both sides >= min_size
// (remove_small_boxes on the stored coordinates).
template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE bool detection_box(const BoxFrame<acc_t>& frame, const scalar_t* codes,
                                  const DecodeParams<acc_t>& p, acc_t min_size, scalar_t* box) {
  acc_t r[4];
  decode_box<acc_t>(frame, static_cast<acc_t>(codes[0]), static_cast<acc_t>(codes[1]),
                    static_cast<acc_t>(codes[2]), static_cast<acc_t>(codes[3]), p,
                    /*clip=*/true, r);
  for (int i = 0; i < 4; ++i) box[i] = static_cast<scalar_t>(r[i]);
  const acc_t w = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(box[2]) -
                                                           static_cast<acc_t>(box[0])));
  const acc_t h = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(box[3]) -
                                                           static_cast<acc_t>(box[1])));
  return w >= min_size && h >= min_size;
}

// The clip bounds of one image, rounded to the input dtype (torch.clamp's Python scalars).
template <typename scalar_t, typename acc_t>
MF_HOST_DEVICE void set_image_size(DecodeParams<acc_t>& p, int64_t h, int64_t w) {
  p.clip = true;
  p.img_h = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(h)));
  p.img_w = static_cast<acc_t>(static_cast<scalar_t>(static_cast<acc_t>(w)));
}

}  // namespace maskrcnn_fast
