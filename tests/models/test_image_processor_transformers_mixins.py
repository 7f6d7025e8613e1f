"""The contracts that transformers' own image-processor tests (5.24+) hold every processor to, run against ours:
`PostProcessSemanticSegmentationTestMixin` (tests/test_image_processing_common.py, ported here because transformers'
test suite is not installed) and the naming rule that a processor's kwargs class is `<processor class>Kwargs`."""

import unittest

import pytest
import torch
from transformers.modeling_outputs import SemanticSegmenterOutput

from modeling_pvt import PvtV1ImageProcessor
from modeling_pvt.image_processing_pvt import SemanticSegmentationPostProcessorOutput


class PvtImageProcessingTester:
    """The parts of transformers' `ImageProcessingTester` the mixin uses."""

    batch_size = 7
    num_labels = 10
    size = {"height": 18, "width": 18}

    def prepare_post_process_semantic_segmentation_inputs(self):
        inputs = {
            "outputs": SemanticSegmenterOutput(
                logits=torch.randn(self.batch_size, self.num_labels, self.size["height"], self.size["width"])
            )
        }
        expected_shape = {"num_labels": self.num_labels, "height": self.size["height"], "width": self.size["width"]}
        return inputs, expected_shape


class PostProcessSemanticSegmentationTestMixin:
    """transformers' mixin of the same name, check for check."""

    def test_post_process_semantic_segmentation(self):
        for image_processing_class in self.image_processing_classes.values():
            with self.subTest(image_processing_class):
                image_processor = image_processing_class(**self.image_processor_dict)
                inputs, expected_shape = self.image_processor_tester.prepare_post_process_semantic_segmentation_inputs()

                segmentation = image_processor.post_process_semantic_segmentation(**inputs)
                self.assertEqual(len(segmentation), self.image_processor_tester.batch_size)
                self.assertEqual(segmentation[0].shape, (expected_shape["height"], expected_shape["width"]))

                segmentation_output = image_processor.post_process_semantic_segmentation(
                    **inputs, return_segmentation_scores=True
                )
                self.assertEqual(len(segmentation_output), self.image_processor_tester.batch_size)
                self.assertTrue(torch.equal(segmentation_output[0].segmentation, segmentation[0]))
                self.assertEqual(
                    segmentation_output[0].segmentation_scores.shape,
                    (expected_shape["num_labels"], expected_shape["height"], expected_shape["width"]),
                )

    def test_post_process_semantic_segmentation_target_sizes(self):
        inputs, expected_shape = self.image_processor_tester.prepare_post_process_semantic_segmentation_inputs()
        for image_processing_class in self.image_processing_classes.values():
            with self.subTest(image_processing_class):
                image_processor = image_processing_class(**self.image_processor_dict)
                target_sizes = [(1, 4) for _ in range(self.image_processor_tester.batch_size)]
                segmentation_resized = image_processor.post_process_semantic_segmentation(
                    **inputs, target_sizes=target_sizes
                )
                self.assertEqual(segmentation_resized[0].shape, target_sizes[0])

                segmentation_output_resized = image_processor.post_process_semantic_segmentation(
                    **inputs, target_sizes=target_sizes, return_segmentation_scores=True
                )
                self.assertTrue(torch.equal(segmentation_output_resized[0].segmentation, segmentation_resized[0]))
                self.assertEqual(
                    segmentation_output_resized[0].segmentation_scores.shape,
                    (expected_shape["num_labels"],) + target_sizes[0],
                )
                with pytest.raises(ValueError):
                    image_processor.post_process_semantic_segmentation(**inputs, target_sizes=target_sizes + [(1, 4)])


class PvtImageProcessingTest(PostProcessSemanticSegmentationTestMixin, unittest.TestCase):
    image_processing_classes = {"pil": PvtV1ImageProcessor}
    image_processor_dict = {"size": {"height": 18, "width": 18}}

    def setUp(self):
        self.image_processor_tester = PvtImageProcessingTester()

    def test_scores_are_the_resized_logits_the_map_is_taken_from(self):
        logits = torch.randn(2, 3, 6, 8)
        outputs = PvtV1ImageProcessor().post_process_semantic_segmentation(
            SemanticSegmenterOutput(logits=logits), target_sizes=[(6, 8), (12, 16)], return_segmentation_scores=True
        )
        self.assertIsInstance(outputs[0], SemanticSegmentationPostProcessorOutput)
        torch.testing.assert_close(outputs[0].segmentation_scores, logits[0])
        self.assertTrue(torch.equal(outputs[1].segmentation, outputs[1].segmentation_scores.argmax(dim=0)))


def test_kwargs_class_is_named_after_the_processor_class():
    assert PvtV1ImageProcessor.valid_kwargs.__name__ == f"{PvtV1ImageProcessor.__name__}Kwargs"
    names = set(PvtV1ImageProcessor.valid_kwargs.__annotations__)
    assert {"do_reduce_labels", "size_divisor", "pad_size_divisor"} <= names
