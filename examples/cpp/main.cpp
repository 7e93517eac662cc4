// maskrcnn_fast_run: Mask R-CNN inference from a .pt2 AOTInductor package, without Python.
//
//   maskrcnn_fast_run <ops library: maskrcnn_fast/_C*.so> <package.pt2> <image.ppm> [out.bin]
//
// Loads our ops library first (its static initialisers register torch.ops.maskrcnn_fast, which
// the package calls through the dispatcher), then the package; checks the image against the
// size recorded in the package's metadata; prints one line per detection:
//   <label> <score> <x1> <y1> <x2> <y2> <mask area>   (mask area: pixels with probability > 0.5)
// and, with out.bin, writes the raw float32/int64 outputs (boxes, labels, scores, masks, counts)
// for comparison.
#include <dlfcn.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>

namespace {

// A binary PPM (P6, 8-bit) as float32 [1, 3, H, W] in [0, 1].
at::Tensor read_ppm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open image " + path);
  std::string magic;
  f >> magic;
  auto next_int = [&f, &path]() {
    int v = 0;
    f >> std::ws;
    while (f.peek() == '#') {  // comment lines in the header
      std::string skip;
      std::getline(f, skip);
      f >> std::ws;
    }
    if (!(f >> v)) throw std::runtime_error(path + ": bad PPM header");
    return v;
  };
  if (magic != "P6") throw std::runtime_error(path + ": not a binary PPM (P6) image");
  const int w = next_int(), h = next_int(), maxval = next_int();
  if (w <= 0 || h <= 0 || maxval != 255) throw std::runtime_error(path + ": need an 8-bit PPM");
  f.get();  // the one whitespace after the header
  std::vector<unsigned char> pixels(static_cast<size_t>(w) * h * 3);
  if (!f.read(reinterpret_cast<char*>(pixels.data()), pixels.size()))
    throw std::runtime_error(path + ": truncated PPM data");
  auto hwc = at::from_blob(pixels.data(), {h, w, 3}, at::kByte);
  return hwc.permute({2, 0, 1}).to(at::kFloat).div_(255.0).unsqueeze(0).contiguous();
}

void write_raw(const std::string& path, const std::vector<at::Tensor>& outputs) {
  std::ofstream f(path, std::ios::binary);
  for (const auto& t : outputs) {
    auto c = t.contiguous().cpu();
    f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " <maskrcnn_fast/_C*.so> <package.pt2> <image.ppm> [out.bin]\n";
    return 2;
  }
  try {
    // RTLD_LAZY: the library's one Python symbol (its module init) is never called here
    if (!dlopen(argv[1], RTLD_LAZY | RTLD_GLOBAL)) {
      std::cerr << "error: cannot load the ops library " << argv[1] << ": " << dlerror() << "\n";
      return 1;
    }
    torch::inductor::AOTIModelPackageLoader loader(argv[2]);
    auto meta = loader.get_metadata();
    const std::string want = meta.count("maskrcnn_fast.image_size") ? meta["maskrcnn_fast.image_size"] : "";
    at::Tensor image = read_ppm(argv[3]);
    const std::string got = std::to_string(image.size(2)) + "x" + std::to_string(image.size(3));
    if (!want.empty() && want != got) {
      std::cerr << "error: " << argv[3] << " is " << got << " but " << argv[2] << " was exported for " << want
                << ": resize the image to " << want << " or export again with --size " << got << "\n";
      return 1;
    }
    std::vector<at::Tensor> out = loader.run({image});
    // outputs: boxes [N, D, 4], labels [N, D], scores [N, D], masks [N, D, H, W], counts [N]
    const int64_t count = out[4][0].item<int64_t>();
    auto boxes = out[0][0], labels = out[1][0], scores = out[2][0], masks = out[3][0];
    for (int64_t i = 0; i < count; ++i) {
      const int64_t area = masks.dim() == 3 && masks.size(1) == image.size(2)
                               ? masks[i].gt(0.5).sum().item<int64_t>() : -1;
      std::printf("%ld %.6f %.4f %.4f %.4f %.4f %ld\n", static_cast<long>(labels[i].item<int64_t>()),
                  scores[i].item<float>(), boxes[i][0].item<float>(), boxes[i][1].item<float>(),
                  boxes[i][2].item<float>(), boxes[i][3].item<float>(), static_cast<long>(area));
    }
    if (argc > 4) write_raw(argv[4], out);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
