// The phone's camera and QR decoder: the back camera full screen, the torch where the phone
// has one, and the newest frame decoded while the last decode is done (a slow decode drops
// frames, never queues them, as on a station). Decoding is zxing-cpp compiled to WebAssembly
// with the station's own settings (edge/decoder/zxing.py), or the browser's BarcodeDetector.
// The .wasm is this site's copy (vendor/, set up by server/phone/assets.py).

import { prepareZXingModule, readBarcodes } from "./vendor/zxing-wasm/es/reader/index.js";

const WASM_DIR = new URL("./vendor/zxing-wasm/reader/", import.meta.url).href;
// The QR family only, rotated and inverted codes searched for, text as encoded (Plain).
const OPTIONS = {
  formats: ["QRCode", "MicroQRCode", "RMQRCode"], tryHarder: true, tryRotate: true, tryInvert: true,
  tryDownscale: true, textMode: "Plain", binarizer: "LocalAverage", returnErrors: true,
};

// zxing-wasm first: the station's decoder, with its text handling (control characters
// kept, as the payload rules expect) and measured here (bench/bench_phone.py). The
// browser's BarcodeDetector (Chrome on Android, Safari) when the WebAssembly cannot load.
export class Decoder {
  static async create() {
    const decoder = new Decoder();
    try {
      await prepareZXingModule({ overrides: { locateFile: (path) => WASM_DIR + path }, fireImmediately: true });
      return decoder;
    } catch (error) {
      if (!("BarcodeDetector" in globalThis)) throw error;
      if (!(await BarcodeDetector.getSupportedFormats()).includes("qr_code")) throw error;
      decoder.native = new BarcodeDetector({ formats: ["qr_code"] });
      decoder.name = "BarcodeDetector";
      return decoder;
    }
  }

  constructor() {
    this.native = null;
    this.name = "zxing-wasm";
  }

  // The texts of the valid codes in an ImageData (or, natively, a video element).
  async decode(image, source) {
    if (this.native) return (await this.native.detect(source || image)).map((code) => code.rawValue);
    let results = await readBarcodes(image, OPTIONS);
    // A code seen but not read: once more with the other binarizer, as the station does.
    if (results.length && !results.some((r) => r.isValid)) {
      results = await readBarcodes(image, { ...OPTIONS, binarizer: "GlobalHistogram" });
    }
    return [...new Set(results.filter((r) => r.isValid).map((r) => r.text))];
  }
}

export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.track = null;
    this.running = false;
    this.frames = 0;
    this.canvas = null;
  }

  async open() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: false, video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
    });
    this.track = this.stream.getVideoTracks()[0];
    this.video.srcObject = this.stream;
    await this.video.play();
  }

  get hasTorch() {
    const caps = this.track && this.track.getCapabilities ? this.track.getCapabilities() : {};
    return Boolean(caps.torch);
  }

  async setTorch(on) {
    if (this.hasTorch) await this.track.applyConstraints({ advanced: [{ torch: on }] });
  }

  // Decode frames until close(): ``onTexts(texts)`` for every frame holding codes.
  run(decoder, onTexts) {
    this.running = true;
    const step = async () => {
      if (!this.running) return;
      const video = this.video;
      if (video.readyState >= 2 && video.videoWidth) {
        if (!this.canvas || this.canvas.width !== video.videoWidth || this.canvas.height !== video.videoHeight) {
          this.canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
          this.context = this.canvas.getContext("2d", { willReadFrequently: true });
        }
        let texts = [];
        try {
          if (decoder.native) {
            texts = await decoder.decode(null, video);
          } else {
            this.context.drawImage(video, 0, 0);
            texts = await decoder.decode(this.context.getImageData(0, 0, this.canvas.width, this.canvas.height));
          }
        } catch {
          texts = []; // a bad frame never stops the gate
        }
        this.frames += 1;
        if (texts.length && this.running) await onTexts(texts);
      }
      if (this.running) {
        if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => step());
        else setTimeout(step, 30);
      }
    };
    step();
  }

  close() {
    this.running = false;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.track = null;
    this.video.srcObject = null;
  }
}
